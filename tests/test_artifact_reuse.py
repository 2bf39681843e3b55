"""An artifact is reused only when its key matches and every file it lists is the one it was built with."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import save_onnx
from vlc.artifact import Artifact, Manifest, SourceInfo, building, cache_key, finalize, find_reusable
from vlc.errors import InputError
from vlc.frontend.pipeline import FrontendOptions, prepare
from vlc.onnx_files import copy_onnx
from vlc.plugin_manager import get_target
from vlc.signature import Signature, TensorSig
from vlc.spec import TargetSpec

X = np.random.default_rng(11).standard_normal((3, 16)).astype(np.float32)


def save_graph(path: Path, seed: int, *, location: str | None = None) -> Path:
    """x @ W + B with weights drawn from `seed` (two seeds: same structure, other numbers)."""
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return save_onnx(model, path, location=location)


def minimal_manifest(key: dict[str, str]) -> Manifest:
    """What every manifest has; finalize adds the files, their hashes and the build's facts."""
    signature = Signature((TensorSig("x", "float32", ("N", 16)),), (TensorSig("y", "float32", ("N", 8)),))
    return Manifest(target="onnxruntime", precision="fp32", spec=TargetSpec("onnxruntime"), signature=signature,
                    source=SourceInfo(ref="g.onnx"), files={}, cache=key)


def reference(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": X})[0]
    assert out.std() > 0.5
    return out


def compile_ort(onnx_path: Path, out_dir: Path, cache: Path) -> Artifact:
    source = prepare(str(onnx_path), cache, FrontendOptions(parity=False))
    return get_target("onnxruntime").compile(source, TargetSpec(target="onnxruntime"), out_dir)


def outputs(artifact_dir: Path) -> np.ndarray:
    artifact = Artifact.load(artifact_dir)
    return get_target("onnxruntime").run(artifact, {"x": X})["y"]


def test_the_key_changes_with_the_source_graph():
    spec = TargetSpec(target="onnxruntime")
    assert cache_key("a" * 64, spec) != cache_key("b" * 64, spec)
    assert cache_key("a" * 64, spec)["source_hash"] == "a" * 64


def test_a_changed_graph_compiled_into_the_same_place_is_rebuilt(tmp_path):
    model = save_graph(tmp_path / "model.onnx", seed=0)
    compile_ort(model, tmp_path / "art", tmp_path / "cache")
    np.testing.assert_allclose(outputs(tmp_path / "art"), reference(model), rtol=1e-5, atol=1e-5)
    save_graph(model, seed=1)  # the user edits the model in place: same path, same options
    rebuilt = compile_ort(model, tmp_path / "art", tmp_path / "cache")
    assert rebuilt.note and "source graph changed" in rebuilt.note
    np.testing.assert_allclose(outputs(tmp_path / "art"), reference(model), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("damage", ["deleted", "replaced by another valid graph", "truncated"])
def test_a_damaged_model_onnx_is_rebuilt_not_reused(tmp_path, damage):
    model = save_graph(tmp_path / "model.onnx", seed=0)
    art = tmp_path / "art"
    first = compile_ort(model, art, tmp_path / "cache")
    assert compile_ort(model, art, tmp_path / "cache").manifest["created"] == first.manifest["created"]
    main = art / first.manifest["files"]["main"]
    if damage == "deleted":
        main.unlink()
    elif damage == "replaced by another valid graph":
        save_graph(main, seed=2)
    else:
        main.write_bytes(main.read_bytes()[:40])
    rebuilt = compile_ort(model, art, tmp_path / "cache")
    assert rebuilt.note is not None and "model.onnx" in rebuilt.note and "\n" not in rebuilt.note
    np.testing.assert_allclose(outputs(art), reference(model), rtol=1e-5, atol=1e-5)
    assert find_reusable(art, rebuilt.manifest["cache"]) == (Artifact(art, rebuilt.manifest), None)


def test_the_hashes_cover_the_external_data_of_listed_graphs(tmp_path):
    src = save_graph(tmp_path / "src" / "g.onnx", seed=0, location="weights/g.bin")
    key = {"source_hash": "s", "spec_key": "k", "vlc_version": "v"}
    with building(tmp_path / "art") as build:
        copy_onnx(src, build.path / "model.onnx", keep_locations=True)
        build.files["main"] = "model.onnx"
        finalize(build, tmp_path / "art", minimal_manifest(key))
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert set(manifest["files_sha256"]) == {"model.onnx", "weights/g.bin"}
    assert find_reusable(tmp_path / "art", key)[0] is not None
    data = tmp_path / "art" / "weights" / "g.bin"
    data.write_bytes(bytes(reversed(data.read_bytes())))
    artifact, why = find_reusable(tmp_path / "art", key)
    assert artifact is None and "weights/g.bin" in why


def test_an_artifact_without_file_hashes_is_rebuilt(tmp_path):
    model = save_graph(tmp_path / "model.onnx", seed=0)
    first = compile_ort(model, tmp_path / "art", tmp_path / "cache")
    manifest = first.manifest.to_json()
    del manifest["files_sha256"]  # written by an older vlc
    (tmp_path / "art" / "manifest.json").write_text(json.dumps(manifest))
    artifact, why = find_reusable(tmp_path / "art", first.manifest["cache"])
    assert artifact is None and "hash" in why


def strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_an_artifact_is_self_contained_and_copyable(vlc_cli, tmp_path, monkeypatch, precision):
    monkeypatch.chdir(tmp_path)
    model = save_graph(tmp_path / "models" / "lin.onnx", seed=0)
    cache = tmp_path / "cache"
    code, _, err = vlc_cli("compile", model, "-t", "onnxruntime", "-p", precision, "-o", "art",
                           "--cache-dir", cache)
    assert code == 0, err
    manifest = json.loads(Path("art/manifest.json").read_text())
    assert not [s for s in strings(manifest) if str(cache) in s]
    assert [s for s in strings(manifest) if s.startswith("/")] == [str(model)]  # the ref, as given
    assert manifest["source"]["hash"] == manifest["cache"]["source_hash"]
    source_graph = Path("art") / manifest["source"]["onnx"]
    assert source_graph.is_file() and source_graph.parent == Path("art")
    if precision == "fp16":
        assert manifest["source"]["onnx"] == "source.onnx"
    shutil.copytree("art", tmp_path / "elsewhere" / "art")
    shutil.rmtree("art")
    shutil.rmtree(cache)
    code, out, err = vlc_cli("compare", tmp_path / "elsewhere" / "art", "--reference", "onnx")
    assert code == 0, err
    assert "within tolerance of onnx" in out


@pytest.mark.parametrize("location", ["ext.bin", "weights/sub/ext.bin"])
def test_onnx_with_external_data_compiles_and_runs(vlc_cli, tmp_path, monkeypatch, location):
    monkeypatch.chdir(tmp_path)
    model = save_graph(Path("ext") / "ext.onnx", seed=0, location=location)
    code, out, err = vlc_cli("compile", "ext/ext.onnx", "-t", "onnxruntime", "-o", "out")
    assert code == 0, err
    np.save("x.npy", X)
    code, out, err = vlc_cli("run", "out", "-i", "x.npy", "-o", "res")
    assert code == 0, err
    np.testing.assert_allclose(np.load("res/outputs.npz")["y"], reference(model), rtol=1e-5, atol=1e-5)
    # new numbers in the data file alone: a new source graph, so a new build
    scratch = save_graph(tmp_path / "scratch" / "ext.onnx", seed=4, location=location)
    shutil.copy(scratch.parent / location, model.parent / location)
    code, out, err = vlc_cli("compile", "ext/ext.onnx", "-t", "onnxruntime", "-o", "out")
    assert code == 0, err
    assert "reused" not in out and "is rebuilt: the source graph changed" in err
    np.testing.assert_allclose(outputs(Path("out")), reference(scratch), rtol=1e-5, atol=1e-5)


def test_missing_external_data_is_one_line_naming_it(vlc_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_graph(Path("extmiss") / "ext.onnx", seed=0, location="ext.bin")
    Path("extmiss/ext.bin").unlink()
    code, _, err = vlc_cli("compile", "extmiss/ext.onnx", "-t", "onnxruntime", "-o", "out")
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "extmiss/ext.bin" in lines[0] and "Traceback" not in err
    assert not Path("out").exists()


def test_the_cli_says_why_it_rebuilds(vlc_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_graph(Path("tiny.onnx"), seed=0)
    assert vlc_cli("compile", "tiny.onnx", "-t", "onnxruntime", "-o", "c1")[0] == 0
    Path("c1/model.onnx").unlink()
    code, out, err = vlc_cli("compile", "tiny.onnx", "-t", "onnxruntime", "-o", "c1")
    assert code == 0, err
    assert "reused" not in out and "c1 is rebuilt: model.onnx is missing" in err
    code, out, err = vlc_cli("run", "c1")
    assert code == 0, err


def test_a_large_graph_keeps_its_data_through_cache_and_artifact(tmp_path, monkeypatch):
    import vlc.frontend.export as export_mod

    monkeypatch.setattr(export_mod, "TWO_GB", 16)  # stand for "over 2 GB" without writing 2 GB
    model = save_graph(tmp_path / "in" / "big.onnx", seed=0, location="w/big.bin")
    source = prepare(str(model), tmp_path / "cache", FrontendOptions(parity=False))
    assert (source.onnx_path.parent / "model.onnx.data").is_file()
    art = tmp_path / "art"
    built = get_target("onnxruntime").compile(source, TargetSpec(target="onnxruntime"), art)
    assert "model.onnx.data" in built.manifest["files_sha256"]
    np.testing.assert_allclose(outputs(art), reference(model), rtol=1e-5, atol=1e-5)
    data = art / "model.onnx.data"
    data.write_bytes(data.read_bytes()[::-1])  # same size, other numbers
    rebuilt = get_target("onnxruntime").compile(source, TargetSpec(target="onnxruntime"), art)
    assert rebuilt.note and "model.onnx.data was modified" in rebuilt.note
    np.testing.assert_allclose(outputs(art), reference(model), rtol=1e-5, atol=1e-5)
    # the cached graph's data is part of the cache entry's recorded hash too
    cached = source.onnx_path.parent / "model.onnx.data"
    cached.write_bytes(cached.read_bytes()[::-1])
    again = prepare(str(model), tmp_path / "cache", FrontendOptions(parity=False))
    assert again.frontend["reused"] is False and "does not match" in again.frontend["cache_note"]


# ---- the typed manifest -------------------------------------------------------------------------
def test_the_manifest_reads_back_as_it_was_written(tmp_path):
    model = save_graph(tmp_path / "model.onnx", seed=0)
    built = compile_ort(model, tmp_path / "art", tmp_path / "cache")
    loaded = Artifact.load(tmp_path / "art").manifest
    assert loaded.to_json() == json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert loaded.to_json() == json.loads(built.manifest.dumps())
    assert loaded.target == "onnxruntime" and loaded.precision == "fp32" and loaded.spec == built.spec
    assert loaded.source.onnx == "model.onnx" and loaded.source.hash == loaded.cache["source_hash"]
    assert set(loaded.files_sha256 or {}) == set(loaded.files.values())
    assert loaded.build_seconds is not None and loaded.build_seconds >= 0 and loaded.created


@pytest.mark.parametrize("change, words", [
    (lambda m: m.pop("target"), "field 'target' is missing"),
    (lambda m: m.update(files=["model.onnx"]), "field 'files' is not a dict"),
    (lambda m: m.update(batch_range=[8, 1]), "field 'batch_range' is not [min, max]"),
    (lambda m: m["files"].update(main="/etc/passwd"), "not a file inside the artifact"),
    (lambda m: m["files"].update(main="../other/model.onnx"), "not a file inside the artifact"),
    (lambda m: m.update(spec={"precision": "fp32"}), "cannot read spec, signature or source"),
    (lambda m: m.update(schema=99), "manifest schema 99"),
])
def test_a_corrupt_manifest_is_one_line(tmp_path, vlc_cli, change, words):
    model = save_graph(tmp_path / "model.onnx", seed=0)
    compile_ort(model, tmp_path / "art", tmp_path / "cache")
    path = tmp_path / "art" / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=re.escape(words)):
        Artifact.load(tmp_path / "art")
    code, _, stderr = vlc_cli("run", tmp_path / "art")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and words in lines[0], stderr
