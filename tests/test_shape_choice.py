"""Sizes vlc chooses for dynamic dims nobody gave a range for (vlc.shape_choice), and the trt-rtx
build that uses them. Every model here fails in ONNX Runtime at size 1, so a chooser that took 1
(Polygraphy's default) or none at all fails these tests."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vlc.plugin_manager import get_target
from vlc.shape_choice import choose_shapes, record, warning_line
from vlc.signature import onnx_signature
from vlc.spec import ShapeRange, TargetSpec
from vlc.target import CompileSource

rtx_missing = importlib.util.find_spec("tensorrt_rtx") is None
VLC = [sys.executable, "-m", "vlc"]


def _save(tmp_path: Path, name: str, nodes, inputs, outputs, inits=()) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _weights(name: str, shape, seed: int) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)


def strided_cnn(tmp_path: Path) -> Path:
    """Three stride-2 3x3 convs without padding, then a classifier on the flattened map: only an
    input whose map comes out 31x31 (a 256x256 image) runs; 1 fails at the first conv, 224 at Gemm."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2]),
             helper.make_node("Conv", ["c2", "w3"], ["c3"], strides=[2, 2]),
             helper.make_node("Flatten", ["c3"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc"], ["y"])]
    inits = [_weights("w1", (4, 3, 3, 3), 1), _weights("w2", (4, 4, 3, 3), 2),
             _weights("w3", (2, 4, 3, 3), 3), _weights("fc", (2 * 31 * 31, 10), 4)]
    return _save(tmp_path, "strided", nodes, [x], [y], inits)


def detector_head(tmp_path: Path) -> Path:
    """A pooled feature sequence concatenated with 16 fixed anchors and reshaped into boxes:
    the sequence length 'L' must pool to 16 (L = 32 or 33)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, "L"])
    y = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 8, 4, 4])
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2], strides=[2]),
             helper.make_node("Concat", ["p", "anchors"], ["c"], axis=1),
             helper.make_node("Reshape", ["c", "box_shape"], ["boxes"])]
    inits = [_weights("anchors", (1, 4, 16), 5),
             numpy_helper.from_array(np.array([1, 8, 4, 4], np.int64), "box_shape")]
    return _save(tmp_path, "detector", nodes, [x], [y], inits)


def shared_seq(tmp_path: Path) -> Path:
    """Token ids and a weight per token share 'seq'; the product is reshaped in pairs of tokens,
    so 'seq' must be even."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    wts = helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None, 8])
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("Unsqueeze", ["weights", "axis"], ["w"]),
             helper.make_node("Mul", ["e", "w"], ["m"]),
             helper.make_node("Reshape", ["m", "pairs"], ["y"])]
    inits = [_weights("table", (10, 4), 6), numpy_helper.from_array(np.array([-1], np.int64), "axis"),
             numpy_helper.from_array(np.array([0, -1, 8], np.int64), "pairs")]
    return _save(tmp_path, "shared", nodes, [ids, wts], [y], inits)


def length_and_state(tmp_path: Path) -> Path:
    """A signal whose length 'L' must be 32 beside a state [2, batch, 'S'] whose 'S' must be 1:
    no single size fits both dims."""
    x = helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["batch", "L"])
    st = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", "S"])
    y = helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 8, 4])
    z = helper.make_tensor_value_info("next", TensorProto.FLOAT, [2, 1])
    nodes = [helper.make_node("Reshape", ["signal", "frame_shape"], ["frames"]),
             helper.make_node("Reshape", ["state", "state_shape"], ["next"])]
    inits = [numpy_helper.from_array(np.array([1, 8, 4], np.int64), "frame_shape"),
             numpy_helper.from_array(np.array([2, 1], np.int64), "state_shape")]
    return _save(tmp_path, "stateful", nodes, [x, st], [y, z], inits)


def _runs(path: Path, feeds: dict) -> bool:
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception:  # noqa: BLE001
        return False
    return True


def _choose(path: Path, **spec):
    return choose_shapes(path, onnx_signature(path), TargetSpec("trt-rtx", **spec))


def test_strided_conv_gets_a_size_its_classifier_accepts(tmp_path):
    path = strided_cnn(tmp_path)
    x1 = np.ones((1, 3, 1, 1), np.float32)
    assert not _runs(path, {"x": x1}) and not _runs(path, {"x": np.ones((1, 3, 224, 224), np.float32)})
    chosen, notes = _choose(path)
    assert chosen == {"x": ShapeRange((1, 3, 256, 256), (1, 3, 256, 256), (1, 3, 256, 256))}
    assert _runs(path, {"x": np.ones((1, 3, 256, 256), np.float32)})
    assert "'H'=256" in notes[0] and "'W'=256" in notes[0] and "batch 1" in notes[0]


def test_batch_range_from_batch_and_other_dims_chosen(tmp_path):
    chosen, _ = _choose(strided_cnn(tmp_path), batch=(1, 4, 8))
    assert chosen["x"] == ShapeRange((1, 3, 256, 256), (4, 3, 256, 256), (8, 3, 256, 256))


def test_detector_concat_and_reshape(tmp_path):
    path = detector_head(tmp_path)
    assert not _runs(path, {"x": np.ones((1, 4, 1), np.float32)})
    chosen, notes = _choose(path)
    assert chosen["x"].opt == (1, 4, 32) and chosen["x"].min == chosen["x"].max == (1, 4, 32)
    assert "'L'=32" in notes[0] and "ONNX Runtime" in notes[-1]


def test_shared_dim_name_gets_one_size(tmp_path):
    path = shared_seq(tmp_path)
    chosen, _ = _choose(path)
    assert set(chosen) == {"ids", "weights"}
    assert chosen["ids"].opt == chosen["weights"].opt == (1, 2)  # 'seq' even; 1 fails the Reshape


def test_dims_that_need_different_sizes_and_a_batch_off_axis_0(tmp_path):
    chosen, _ = _choose(length_and_state(tmp_path), batch=(1, 1, 4))
    assert chosen["signal"] == ShapeRange((1, 32), (1, 32), (4, 32))
    assert chosen["state"] == ShapeRange((2, 1, 1), (2, 1, 1), (2, 4, 1))  # the batch on axis 1


def test_a_state_with_the_batch_on_axis_1_gets_the_batch_range(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    st = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4])
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, "batch", 4])]
    path = _save(tmp_path, "state", [helper.make_node("Relu", ["x"], ["y"]),
                                     helper.make_node("Relu", ["state"], ["z"])], [x, st], outs)
    chosen, _ = _choose(path, batch=(1, 2, 4))
    assert chosen == {"state": ShapeRange((2, 1, 4), (2, 2, 4), (2, 4, 4))}  # x has its range from --batch


def test_explicit_shapes_are_respected_and_nothing_is_chosen(tmp_path):
    path = strided_cnn(tmp_path)
    given = ShapeRange((1, 3, 512, 512), (2, 3, 512, 512), (2, 3, 512, 512))
    assert _choose(path, shapes={"x": given}) == ({}, [])


def test_only_the_inputs_without_a_range_are_chosen(tmp_path):
    path = shared_seq(tmp_path)
    given = ShapeRange((1, 4), (1, 4), (1, 4))
    chosen, _ = _choose(path, shapes={"ids": given})
    assert set(chosen) == {"weights"} and chosen["weights"].opt == (1, 4)  # runs beside ids at seq 4


def test_warning_line_names_every_choice_and_the_override(tmp_path):
    chosen, notes = _choose(shared_seq(tmp_path))
    line = warning_line(chosen, notes)
    assert "\n" not in line
    assert "ids 1x2 (batch 1, 'seq'=2)" in line and "weights 1x2 (batch 1, 'seq'=2)" in line
    assert "--shapes NAME:MIN,OPT,MAX" in line and "--batch" in line
    extra: dict = {}
    assert record(chosen, notes, extra) == line
    assert extra["shape_choice"]["chosen_by"] == "vlc" and extra["warnings"] == [line]
    assert extra["shape_choice"]["shapes"]["ids"] == {"min": [1, 2], "opt": [1, 2], "max": [1, 2]}


@pytest.mark.skipif(rtx_missing, reason="tensorrt_rtx is not installed")
def test_trt_rtx_builds_such_a_model_with_no_flags(tmp_path):
    path = detector_head(tmp_path)
    artifact = get_target("trt-rtx").compile(CompileSource(path, "detector", []),
                                             TargetSpec("trt-rtx", preset="a10"), tmp_path / "out")
    extra = artifact.manifest["extra"]
    assert extra["trt"]["profiles"] == [{"x": {"min": [1, 4, 32], "opt": [1, 4, 32], "max": [1, 4, 32]}}]
    assert extra["shape_choice"]["chosen_by"] == "vlc"
    assert (artifact.path / artifact.manifest["files"]["main"]).stat().st_size > 0


@pytest.mark.skipif(rtx_missing, reason="tensorrt_rtx is not installed")
def test_cli_build_warns_once_and_explicit_shapes_warn_nothing(tmp_path):
    path = strided_cnn(tmp_path)
    common = ["compile", str(path), "--target", "trt-rtx", "--preset", "a10", "--cache-dir", str(tmp_path / "c")]
    done = subprocess.run(VLC + common + ["-o", str(tmp_path / "a")], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: dynamic dims")]
    assert len(warnings) == 1 and "x 1x3x256x256 (batch 1, 'H'=256, 'W'=256)" in warnings[0]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["extra"]["shape_choice"]["shapes"]["x"]["opt"] == [1, 3, 256, 256]
    given = "x:1x3x256x256,2x3x256x256,2x3x256x256"
    done = subprocess.run(VLC + common + ["-o", str(tmp_path / "b"), "--shapes", given],
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "dynamic dims" not in done.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "shape_choice" not in manifest["extra"]
    assert manifest["extra"]["trt"]["profiles"][0]["x"]["opt"] == [2, 3, 256, 256]


def test_ascend_bundle_freezes_to_the_chosen_shapes(tmp_path):
    path = strided_cnn(tmp_path)
    out = get_target("ascend310p").emit_bundle(CompileSource(path, "strided", []),
                                               TargetSpec("ascend310p", batch=(2, 2, 2)), tmp_path / "bundle")
    meta = json.loads((Path(out) / "bundle.json").read_text())
    assert any("x 2x3x256x256 (batch 2, 'H'=256, 'W'=256)" in n and "--shapes" in n
               for n in meta["check"]["notes"])
    frozen = onnx.load(str(Path(out) / "model_bs2.onnx"))
    dims = [d.dim_value for d in frozen.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 256, 256]  # the build's batch, the chosen H and W


def test_ascend_check_sees_the_chosen_sizes(tmp_path):
    path = detector_head(tmp_path)
    report = get_target("ascend310p").preflight(CompileSource(path, "detector", []), TargetSpec("ascend310p"))
    assert not [f for f in report.remaining if f.code == "dynamic-dim"]
    assert any("'L'=32" in n for n in report.notes)


def reflect_pad(tmp_path: Path) -> Path:
    """A reflect Pad over a dynamic length: the user's own length must reach the build."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L2"])
    pads = numpy_helper.from_array(np.array([0, 2, 0, 2], np.int64), "pads")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"), helper.make_node("Tanh", ["p"], ["y"])]
    return _save(tmp_path, "reflect", nodes, [x], [y], [pads])


def test_user_inputs_size_the_dynamic_dims_and_feed_the_check(tmp_path, vlc_cli):
    path = reflect_pad(tmp_path)
    feeds = tmp_path / "in.npz"
    np.savez(feeds, x=np.random.default_rng(3).standard_normal((2, 37)).astype(np.float32))
    out = tmp_path / "fp16"
    code, o, e = vlc_cli("compile", path, "--target", "onnxruntime", "--precision", "fp16", "-i", feeds,
                         "-o", out, "--cache-dir", tmp_path / "c", "--json")
    assert code == 0, o + e
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["precision"]["check"]["inputs"] == "the inputs given with --input"
    assert manifest["batch_range"] == [2, 2]  # min = opt = max: the user's shape
    assert "shapes from the inputs given with --input: x 2x37" in e


@pytest.mark.skipif(rtx_missing, reason="TensorRT-RTX is not installed")
def test_trt_rtx_builds_for_the_users_length(tmp_path, vlc_cli):
    path = reflect_pad(tmp_path)
    feeds = tmp_path / "in.npz"
    np.savez(feeds, x=np.random.default_rng(3).standard_normal((1, 37)).astype(np.float32))
    out = tmp_path / "rtx"
    code, o, e = vlc_cli("compile", path, "--target", "trt-rtx", "--preset", "a10", "--batch", "1,2,4",
                         "-i", feeds, "-o", out, "--cache-dir", tmp_path / "c")
    assert code == 0, o + e
    manifest = json.loads((out / "manifest.json").read_text())
    shapes = json.dumps(manifest)
    assert "37" in shapes and "x sizes Nx37" in e
