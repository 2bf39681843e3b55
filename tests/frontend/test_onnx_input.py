"""ONNX files from older and foreign producers load: IR 3 weights-as-inputs, opset < 7, -1 dims."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vlc.frontend.onnx_input import normalize_onnx_input
from vlc.frontend.pipeline import FrontendOptions, prepare
from vlc.signature import onnx_signature

RNG = np.random.default_rng(5)


def _ir3_conv(listed: bool = True) -> onnx.ModelProto:
    """A classic model-zoo layout: IR 3, opset 9, weights as initializers listed as graph inputs."""
    w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b = RNG.normal(size=(4,)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    if listed:
        inputs += [helper.make_tensor_value_info("W", TensorProto.FLOAT, w.shape),
                   helper.make_tensor_value_info("B", TensorProto.FLOAT, b.shape)]
    graph = helper.make_graph(nodes, "zoo", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_ir3_weights_listed_as_inputs_stay_weights(tmp_path):
    src = tmp_path / "zoo.onnx"
    onnx.save(_ir3_conv(), str(src))
    source = prepare(str(src), cache_dir=tmp_path / "cache", options=FrontendOptions(simplify=False))
    normalized = onnx.load(str(source.onnx_path))
    assert normalized.ir_version >= 4
    assert [t.name for t in onnx_signature(normalized).inputs] == ["x"]  # not x, W, B
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    want, = _run(src, {"x": x})
    got, = _run(source.onnx_path, {"x": x})
    assert want.std() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_ir3_with_an_unlisted_initializer_passes_the_checker(tmp_path):
    """What a rewrite leaves of an IR 3 file (an initializer no longer among the inputs)."""
    model = ir.serde.deserialize_model(_ir3_conv(listed=False))
    model, notes = normalize_onnx_input(model)
    path = tmp_path / "out.onnx"
    ir.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)  # refuses IR 3: "B in initializer but not in graph input"
    assert any("IR version 3" in n for n in notes)


def _opset6_pool() -> onnx.ModelProto:
    """What early PyTorch converters wrote: opset 6, AveragePool-1 and BatchNormalization-6."""
    scale, bias = RNG.uniform(0.5, 1.5, 3).astype(np.float32), RNG.normal(size=3).astype(np.float32)
    mean, var = RNG.normal(size=3).astype(np.float32), RNG.uniform(0.5, 2, 3).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((scale, "s"), (bias, "b"), (mean, "m"), (var, "v"))]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"], is_test=1),
             helper.make_node("AveragePool", ["n"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(
        nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])] +
        [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, [3]) for i in inits],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 3, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)


def test_opset_6_files_run_in_onnxruntime(tmp_path):
    model = _opset6_pool()
    src = tmp_path / "old.onnx"
    onnx.save(model, str(src))
    with pytest.raises(Exception, match="NOT_IMPLEMENTED|implementation"):
        _run(src, {})  # ONNX Runtime itself cannot load the file as written
    source = prepare(str(src), cache_dir=tmp_path / "cache")
    x = RNG.normal(size=(2, 3, 6, 6)).astype(np.float32)
    got, = _run(source.onnx_path, {"x": x})
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    c = lambda a: a.reshape(1, 3, 1, 1)  # noqa: E731
    normed = c(arrays["s"]) * (x - c(arrays["m"])) / np.sqrt(c(arrays["v"]) + 1e-5) + c(arrays["b"])
    want = normed.reshape(2, 3, 3, 2, 3, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _paddle_style() -> onnx.ModelProto:
    """paddle2onnx's layout: dynamic axes as dim_value -1 and dim_param '?'."""
    w = RNG.normal(size=(2, 3, 3, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 2, "?", "?"])
    graph = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])],
                              "p2o", [x], [y], [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


def test_minus_one_and_question_mark_dims_are_dynamic():
    sig = onnx_signature(_paddle_style())
    shape = sig.inputs[0].shape
    assert all(isinstance(d, str) for d in (shape[0], shape[2], shape[3])), shape
    assert len({shape[0], shape[2], shape[3]}) == 3  # '?' is no shared symbol: H and W differ
    x = np.zeros((2, 3, 8, 12), np.float32)  # batch 2, H != W
    assert sig.validate_inputs({"x": x}) == 2


def test_unnamed_axes_of_different_inputs_are_not_tied():
    """silero-vad: input [?, ?] and state [2, ?, 128]; axis 1 of the two is not one size."""
    inputs = [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["", ""]),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "", 4])]
    graph = helper.make_graph([helper.make_node("Identity", ["audio"], ["y"])], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["", ""])])
    sig = onnx_signature(helper.make_model(graph))
    feeds = {"audio": np.zeros((1, 512), np.float32), "state": np.zeros((2, 1, 4), np.float32)}
    assert sig.validate_inputs(feeds) == 1


def test_minus_one_dims_compile_and_run_with_any_batch(tmp_path, vlc_cli):
    src = tmp_path / "p2o.onnx"
    onnx.save(_paddle_style(), str(src))
    source = prepare(str(src), cache_dir=tmp_path / "cache")
    normalized = onnx.load(str(source.onnx_path))
    dims = [d for v in list(normalized.graph.input) + list(normalized.graph.output)
            for d in v.type.tensor_type.shape.dim]
    assert not any(d.HasField("dim_value") and d.dim_value < 0 for d in dims)
    x = RNG.normal(size=(3, 3, 8, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    art = tmp_path / "art"
    code, out, err = vlc_cli("compile", str(src), "--target", "onnxruntime", "-o", str(art),
                             "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, out + err
    code, out, err = vlc_cli("run", str(art), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o"))
    assert code == 0, out + err
    got = np.load(tmp_path / "o" / "y.npy")
    want, = _run(src, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_minus_one_dims_take_shapes_and_build_trt_fp16(tmp_path, vlc_cli):
    """--shapes sets every -1 axis (it was 'changes fixed axis 0 (size -1)'), and the fp16 check's
    generated inputs get those sizes (it was 'negative dimensions are not allowed')."""
    src = tmp_path / "p2o.onnx"
    onnx.save(_paddle_style(), str(src))
    code, out, err = vlc_cli("compile", str(src), "--target", "trt-rtx", "--preset", "a10",
                             "--precision", "fp16", "--shapes", "x:1x3x16x24,2x3x16x24,4x3x16x24",
                             "-o", str(tmp_path / "trt"), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, out + err
