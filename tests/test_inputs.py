"""vlc.inputs: reading inputs from files, generating them, saving outputs."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from vlc.errors import InputError
from vlc.inputs import generate_inputs, load_arrays, load_inputs, save_outputs
from vlc.model import BATCH, InputSpec
from vlc.signature import Signature, TensorSig

SIG = Signature(inputs=(TensorSig("image", "float32", ("batch", 3, 4)), TensorSig("ids", "int64", ("batch", 5))),
                outputs=(TensorSig("logits", "float32", ("batch", 2)),))


def _arrays(batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"image": rng.standard_normal((batch, 3, 4)).astype(np.float32),
            "ids": rng.integers(0, 9, (batch, 5)).astype(np.int64)}


def test_npy_files_named_by_stem_or_explicitly(tmp_path):
    a = _arrays()
    np.save(tmp_path / "image.npy", a["image"])
    np.save(tmp_path / "tokens.npy", a["ids"])
    feeds = load_inputs([tmp_path / "image.npy", f"ids={tmp_path / 'tokens.npy'}"], SIG)
    assert list(feeds) == ["image", "ids"]
    np.testing.assert_array_equal(feeds["image"], a["image"])
    np.testing.assert_array_equal(feeds["ids"], a["ids"])


def test_npz_keys_are_names_and_directories_are_read_whole(tmp_path):
    a = _arrays()
    np.savez(tmp_path / "all.npz", **a)
    feeds = load_inputs([tmp_path / "all.npz"], SIG)
    np.testing.assert_array_equal(feeds["ids"], a["ids"])
    folder = tmp_path / "dir"
    folder.mkdir()
    for name, array in a.items():
        np.save(folder / f"{name}.npy", array)
    (folder / "notes.txt").write_text("ignored: not an array file")
    feeds = load_inputs([folder], SIG)
    np.testing.assert_array_equal(feeds["image"], a["image"])


def test_onnx_tensor_protos_use_their_stored_name(tmp_path):
    a = _arrays()
    for i, (name, array) in enumerate(a.items()):
        (tmp_path / f"input_{i}.pb").write_bytes(numpy_helper.from_array(array, name).SerializeToString())
    feeds = load_inputs([tmp_path], SIG)
    np.testing.assert_array_equal(feeds["image"], a["image"])
    np.testing.assert_array_equal(feeds["ids"], a["ids"])


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("garbage_npy", "cannot read file"),
    ("garbage_npz", "cannot read file"),
    ("garbage_pb", "cannot read file"),
    ("unknown_name", "unknown input name(s) pixels"),
    ("twice", "is given twice"),
    ("absent_input", "no file for input(s) ids"),
    ("bad_suffix", "unknown type '.txt'"),
    ("empty_dir", "holds no .npy"),
])
def test_input_file_errors_are_one_clear_line(tmp_path, case, message):
    a = _arrays()
    np.save(tmp_path / "image.npy", a["image"])
    np.save(tmp_path / "ids.npy", a["ids"])
    paths: list = {
        "missing": [tmp_path / "nope.npy"],
        "garbage_npy": [tmp_path / "g.npy"],
        "garbage_npz": [tmp_path / "g.npz"],
        "garbage_pb": [tmp_path / "g.pb"],
        "unknown_name": [tmp_path / "image.npy", tmp_path / "ids.npy", f"pixels={tmp_path / 'image.npy'}"],
        "twice": [tmp_path / "image.npy", f"image={tmp_path / 'image.npy'}", tmp_path / "ids.npy"],
        "absent_input": [tmp_path / "image.npy"],
        "bad_suffix": [tmp_path / "x.txt"],
        "empty_dir": [tmp_path / "empty"],
    }[case]
    for suffix in ("npy", "npz", "pb"):
        (tmp_path / f"g.{suffix}").write_bytes(b"\x93NUMPY garbage that is not an array" * 3)
    (tmp_path / "x.txt").write_text("1 2 3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as info:
        load_inputs(paths, SIG)
    line = info.value.line()
    assert message in line and "\n" not in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_says_permission_denied(tmp_path):
    path = tmp_path / "image.npy"
    np.save(path, _arrays()["image"])
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        load_inputs([path], SIG)


def test_load_arrays_for_outputs_accepts_a_subset(tmp_path):
    np.save(tmp_path / "logits.npy", np.ones((2, 2), np.float32))
    got = load_arrays([tmp_path / "logits.npy"], ["logits", "probs"], what="output")
    assert list(got) == ["logits"]
    with pytest.raises(InputError, match="unknown output name"):
        load_arrays([f"bogus={tmp_path / 'logits.npy'}"], ["logits", "probs"], what="output")


def test_generate_inputs_uses_specs_generator_or_signature():
    specs = [InputSpec("image", (BATCH, 3, 4)), InputSpec("ids", (BATCH, 5), "int64", "int", 0, 7)]
    feeds = generate_inputs(specs, SIG, batch=3, seed=1)
    assert feeds["image"].shape == (3, 3, 4) and feeds["image"].dtype == np.float32
    assert feeds["image"].std() > 0.5  # real spread, not zeros
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].min() >= 0 and feeds["ids"].max() < 7
    again = generate_inputs(specs, SIG, batch=3, seed=1)
    np.testing.assert_array_equal(feeds["image"], again["image"])  # seeded
    other = generate_inputs(specs, SIG, batch=3, seed=2)
    assert not np.array_equal(feeds["image"], other["image"])

    generic = generate_inputs(None, SIG, batch=2, seed=0)  # from the signature alone
    assert generic["image"].shape == (2, 3, 4) and generic["ids"].shape == (2, 5)

    calls = []

    def generator(batch: int, seed: int) -> dict[str, np.ndarray]:
        calls.append((batch, seed))
        return {**_arrays(batch), "extra": np.zeros(1)}

    made = generate_inputs(specs, SIG, batch=4, seed=9, generator=generator)
    assert calls == [(4, 9)] and list(made) == ["image", "ids"]  # only the signature's inputs

    with pytest.raises(InputError, match="no value for ids"):
        generate_inputs(None, SIG, 2, 0, generator=lambda b, s: {"image": _arrays(b)["image"]})
    with pytest.raises(InputError, match="not positive"):
        generate_inputs(specs, SIG, batch=0)


def test_save_outputs_writes_npy_per_output_and_an_npz(tmp_path):
    outputs = {"logits": np.arange(6, dtype=np.float32).reshape(2, 3), "scores/max:0": np.ones(2, np.int64)}
    written = save_outputs(outputs, tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == ["logits.npy", "outputs.npz", "scores_max_0.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "logits.npy"), outputs["logits"])
    with np.load(tmp_path / "out" / "outputs.npz") as archive:
        assert set(archive.files) == {"logits", "scores/max:0"}
        np.testing.assert_array_equal(archive["scores/max:0"], outputs["scores/max:0"])


def test_tensor_proto_round_trip_matches_onnx_helper(tmp_path):
    array = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "t.pb"
    path.write_bytes(onnx.numpy_helper.from_array(array, "").SerializeToString())
    sig = Signature((TensorSig("t", "float32", (3, 4)),), ())
    np.testing.assert_array_equal(load_inputs([path], sig)["t"], array)  # no stored name: the stem
