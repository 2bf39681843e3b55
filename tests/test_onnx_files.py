"""An ONNX model with external data anywhere below its folder is listed, hashed and copied whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from tests.conftest import save_onnx
from vlc.errors import InputError
from vlc.onnx_files import (
    copy_onnx,
    external_data_files,
    external_data_locations,
    onnx_sha256,
)


def model_with_constant(seed: int = 0) -> onnx.ModelProto:
    """y = x @ W + C, W an initializer and C a Constant node's attribute."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "W")
    constant = helper.make_node("Constant", [], ["C"],
                                value=numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "c"))
    graph = helper.make_graph(
        [constant, helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "C"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def save_external(path: Path, location: str, *, one_file: bool = True, seed: int = 0) -> Path:
    return save_onnx(model_with_constant(seed), path, location=location, one_file=one_file)


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


X = np.random.default_rng(5).standard_normal((3, 6)).astype(np.float32)


def test_locations_cover_initializers_and_constant_attributes(tmp_path):
    path = save_external(tmp_path / "m" / "m.onnx", "unused", one_file=False)
    proto = onnx.load(str(path), load_external_data=False)
    assert proto.graph.node[0].attribute[0].t.data_location == TensorProto.EXTERNAL
    locations = external_data_locations(path)
    assert len(locations) == 2  # one file per tensor: W and the Constant's value
    assert [p.name for p in external_data_files(path)] == [Path(loc).name for loc in locations]


def test_copy_keeps_relative_locations_and_runs(tmp_path):
    src = save_external(tmp_path / "src" / "m.onnx", "weights/sub/m.bin")
    copied = copy_onnx(src, tmp_path / "dst" / "model.onnx", keep_locations=True)
    assert copied == ["model.onnx", "weights/sub/m.bin"]
    assert (tmp_path / "dst" / "weights" / "sub" / "m.bin").is_file()
    expected = run(src, X)
    assert expected.std() > 0.5
    (src.parent / "weights" / "sub" / "m.bin").unlink()  # the copy must not read the original's data
    np.testing.assert_array_equal(run(tmp_path / "dst" / "model.onnx", X), expected)


def test_copy_writes_only_files_named_after_its_output(tmp_path):
    """Data at another location goes below dst.onnx.data/: a user's file beside dst stays as it is."""
    src = save_external(tmp_path / "src" / "m.onnx", "ext.bin")
    expected = run(src, X)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "ext.bin").write_text("the user's own file")
    assert copy_onnx(src, tmp_path / "dst" / "model.onnx") == ["model.onnx", "model.onnx.data/ext.bin"]
    assert (tmp_path / "dst" / "ext.bin").read_text() == "the user's own file"
    np.testing.assert_array_equal(run(tmp_path / "dst" / "model.onnx", X), expected)


def test_data_named_after_the_model_is_renamed_after_the_copy(tmp_path):
    src = save_external(tmp_path / "src" / "model.onnx", "model.onnx.data")
    expected = run(src, X)
    assert copy_onnx(src, tmp_path / "out" / "a.onnx") == ["a.onnx", "a.onnx.data"]
    assert copy_onnx(src, tmp_path / "out" / "b.onnx") == ["b.onnx", "b.onnx.data"]
    assert external_data_locations(tmp_path / "out" / "a.onnx") == ["a.onnx.data"]
    np.testing.assert_array_equal(run(tmp_path / "out" / "a.onnx", X), expected)
    np.testing.assert_array_equal(run(tmp_path / "out" / "b.onnx", X), expected)
    assert not (tmp_path / "out" / "model.onnx.data").exists()


def test_missing_data_is_one_line_naming_the_file(tmp_path):
    src = save_external(tmp_path / "extmiss" / "m.onnx", "w/m.bin")
    (src.parent / "w" / "m.bin").unlink()
    for call in (lambda: copy_onnx(src, tmp_path / "dst" / "m.onnx"), lambda: onnx_sha256(src)):
        with pytest.raises(InputError) as info:
            call()
        assert str(src.parent / "w" / "m.bin") in info.value.line() and "\n" not in info.value.line()
    assert not (tmp_path / "dst" / "m.onnx").exists()


def test_data_outside_the_model_folder_is_not_copied(tmp_path):
    model = model_with_constant()
    (tmp_path / "shared").mkdir()
    (tmp_path / "model").mkdir()
    weight = model.graph.initializer[0]
    (tmp_path / "shared" / "w.bin").write_bytes(weight.raw_data)
    set_external_data(weight, location="../shared/w.bin")  # onnx's own writer refuses this; others do not
    weight.ClearField("raw_data")
    (tmp_path / "model" / "m.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(InputError, match="outside its directory"):
        copy_onnx(tmp_path / "model" / "m.onnx", tmp_path / "dst" / "m.onnx")
    assert not (tmp_path / "w.bin").exists() and not (tmp_path / "dst" / "m.onnx").exists()


def test_the_hash_covers_every_data_file(tmp_path):
    a = save_external(tmp_path / "a" / "m.onnx", "w/m.bin", seed=0)
    b = save_external(tmp_path / "b" / "m.onnx", "w/m.bin", seed=1)
    assert a.read_bytes() == b.read_bytes()  # only the data differs
    assert onnx_sha256(a) != onnx_sha256(b)
    (b.parent / "w" / "m.bin").write_bytes((a.parent / "w" / "m.bin").read_bytes())
    assert onnx_sha256(a) == onnx_sha256(b)
