"""fp16's range after an fp32 island: a sum kept in fp32 can exceed 65504, and what reads it next
must not cast it to fp16 (an L2 norm's Add(eps) would turn 1e5 into inf and the output into 0)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vlc.accuracy import compare_outputs, default_tolerance
from vlc.frontend.precision import convert
from vlc.frontend.precision.check import emulate_low_precision, run_onnx
from vlc.frontend.precision.lowp import to_low_precision


def l2_norm_graph(path=None) -> onnx.ModelProto:
    """y = x / sqrt(ReduceSum(x * x) + eps), the normalization CLIP-style heads end with."""
    inits = [numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(np.array(1e-6, np.float32), "eps")]
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"], name="square"),
             helper.make_node("ReduceSum", ["sq", "axes"], ["total"], name="sum", keepdims=1),
             helper.make_node("Add", ["total", "eps"], ["total_eps"], name="add_eps"),
             helper.make_node("Sqrt", ["total_eps"], ["norm"], name="sqrt"),
             helper.make_node("Div", ["x", "norm"], ["y"], name="normalize")]
    graph = helper.make_graph(nodes, "l2norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if path is not None:
        onnx.save(model, str(path))
    return model


def large_feeds(batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Values whose squares fit fp16 but whose sum of 64 squares (about 1e5) does not."""
    rng = np.random.default_rng(seed)
    return {"x": (40.0 * rng.standard_normal((batch, 64))).astype(np.float32)}


def test_feeds_overflow_fp16_only_in_the_sum():
    feeds = large_feeds()
    squares = feeds["x"].astype(np.float64) ** 2
    assert squares.max() < 65504 < squares.sum(-1).min()


def test_add_eps_after_an_fp32_reducesum_stays_in_fp32():
    model = l2_norm_graph()
    converted, stats = to_low_precision(model, TensorProto.FLOAT16)
    assert stats.fp32_nodes.get("sum") == "op"
    assert stats.fp32_nodes.get("add_eps") == "range"
    assert stats.fp32_nodes.get("sqrt") == "range"
    assert stats.fp32_nodes.get("normalize") == "range"  # divides by the wide norm, back in range
    assert "square" not in stats.fp32_nodes  # the squares themselves fit fp16
    feeds = large_feeds()
    reference = run_onnx(model, feeds)
    # ONNX Runtime's CPU runs the fp16 Add with its fp32 kernel and drops the Cast in front of
    # it, hiding the overflow; the emulation rounds every fp16 tensor as a GPU stores it
    actual = run_onnx(emulate_low_precision(converted, TensorProto.FLOAT16), feeds)
    assert np.isfinite(actual["y"]).all() and np.abs(actual["y"]).min() > 0
    report = compare_outputs(actual, reference, default_tolerance("fp16"))
    assert report.passed, report.to_json()


def test_the_l2_norm_converts_within_fp16_tolerance(tmp_path):
    src = tmp_path / "l2.onnx"
    l2_norm_graph(src)
    report = convert(src, "fp16", tmp_path / "l2.fp16.onnx", check_feeds=large_feeds(seed=3))
    assert report.passed, report.summary()
    assert report.accuracy.outputs[0].cosine >= 0.999
    assert "emulated" in report.check  # every fp16 tensor rounded (and ranged) where produced


def test_bf16_has_the_range_and_leaves_the_add_low():
    converted, stats = to_low_precision(l2_norm_graph(), TensorProto.BFLOAT16)
    assert stats.fp32_nodes.get("sum") == "op"
    assert "add_eps" not in stats.fp32_nodes
