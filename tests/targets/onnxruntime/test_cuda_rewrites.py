"""The onnxruntime target's CUDA rewrites (cuda_rewrites.py): each rule fires where it should, is
left out where it must not fire, and keeps the outputs (checked with ONNX Runtime on the CPU, which
runs the same operators)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vlc.errors import InputError
from vlc.targets.onnxruntime.cuda_rewrites import RULES
from vlc.targets.onnxruntime.gpu_path import (
    FUSION_PASSES,
    attention_kernel,
    conv_algo_search,
    disabled_optimizers,
    fusion_passes,
)

RNG = np.random.default_rng(1)


def typed(given: dict | None = None) -> dict:
    """The target's typed options, as its helpers take them (OnnxRuntimeTarget.parse_options)."""
    from vlc.targets.onnxruntime.target import OnnxRuntimeTarget

    return OnnxRuntimeTarget().parse_options(given or {})


def _apply(model: onnx.ModelProto, rules: str) -> tuple[onnx.ModelProto, int]:
    from onnxscript.rewriter import pattern

    graph = ir.from_proto(onnx.shape_inference.infer_shapes(model))
    fired = pattern.RewriteRuleSet(list(RULES[rules])).apply_to_model(graph)
    common_passes.RemoveUnusedNodesPass()(graph)
    return ir.to_proto(graph), fired


def _run(model: onnx.ModelProto, x: np.ndarray, disabled: list[str] | None = None) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled or [])
    return session.run(None, {"x": x})[0]


def _patch_embedding(kernel: int, stride: int, pads: int = 0, bias: bool = True) -> onnx.ModelProto:
    """A ViT-style patch embedding: Conv, then (N, C, H*W) -> (N, H*W, C)."""
    channels, size = 8, 16
    grid = (size + 2 * pads - kernel) // stride + 1
    inits = [numpy_helper.from_array(RNG.standard_normal((channels, 3, kernel, kernel)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([-1, channels, grid * grid], np.int64), "flat")]
    conv_inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(RNG.standard_normal(channels).astype(np.float32), "b"))
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                              pads=[pads] * 4),
             helper.make_node("Reshape", ["c", "flat"], ["f"]),
             helper.make_node("Transpose", ["f"], ["y"], perm=[0, 2, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


@pytest.mark.parametrize("bias", [True, False])
def test_a_patch_convolution_becomes_one_matmul_with_the_same_tokens(bias):
    model = _patch_embedding(kernel=4, stride=4, bias=bias)
    rewritten, fired = _apply(model, "patch-matmul")
    ops = [n.op_type for n in rewritten.graph.node]
    assert fired == 2 and "Conv" not in ops and ops.count("MatMul") == 1
    assert ops.count("Transpose") == 1  # the patchify; the NCHW round trip is gone
    for batch in (1, 3):
        x = RNG.standard_normal((batch, 3, 16, 16)).astype(np.float32)
        want = _run(model, x)
        assert want.std() > 0.5
        np.testing.assert_allclose(_run(rewritten, x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,stride,pads", [(4, 2, 0), (4, 4, 1), (1, 1, 0)],
                         ids=["overlapping", "padded", "pointwise"])
def test_other_convolutions_are_left_alone(kernel, stride, pads):
    _, fired = _apply(_patch_embedding(kernel, stride, pads), "patch-matmul")
    assert fired == 0


def _packed_attention(split_axis: int = -1) -> onnx.ModelProto:
    """MatMul -> Split in three -> com.microsoft MultiHeadAttention(q, k, v, bias)."""
    d, heads = 16, 2
    inits = [numpy_helper.from_array(RNG.standard_normal((d, 3 * d)).astype(np.float32) / 4, "w"),
             numpy_helper.from_array(np.array([d, d, d], np.int64), "sizes"),
             numpy_helper.from_array(RNG.standard_normal(3 * d).astype(np.float32) / 4, "bias")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["qkv"]),
             helper.make_node("Split", ["qkv", "sizes"], ["q", "k", "v"], axis=split_axis),
             helper.make_node("MultiHeadAttention", ["q", "k", "v", "bias"], ["y"], domain="com.microsoft",
                              num_heads=heads)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 7, d])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets,
                             ir_version=9)


def test_a_packed_projection_and_split_become_one_attention_node():
    model = _packed_attention()
    rewritten, fired = _apply(model, "qkv-attention")
    assert fired == 1 and [n.op_type for n in rewritten.graph.node] == ["Attention"]
    x = RNG.standard_normal((3, 7, 16)).astype(np.float32)
    want = _run(model, x)
    assert want.std() > 0.1
    np.testing.assert_allclose(_run(rewritten, x), want, rtol=1e-4, atol=1e-4)


def test_a_split_on_another_axis_is_left_alone():
    _, fired = _apply(_packed_attention(split_axis=1), "qkv-attention")
    assert fired == 0


def _conv_block(bias: bool = True) -> onnx.ModelProto:
    """A MobileViT-style pair: pointwise Conv then depthwise 3x3 Conv, each with a SiLU."""
    channels = 8
    inits = [numpy_helper.from_array(RNG.standard_normal((channels, 3, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(RNG.standard_normal((channels, 1, 3, 3)).astype(np.float32) / 3, "w2")]
    names = (["x", "w1"], ["a", "w2"])
    if bias:
        inits += [numpy_helper.from_array(RNG.standard_normal(channels).astype(np.float32), "b1"),
                  numpy_helper.from_array(RNG.standard_normal(channels).astype(np.float32), "b2")]
        names = (["x", "w1", "b1"], ["a", "w2", "b2"])
    nodes = [helper.make_node("Conv", names[0], ["c1"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c1"], ["s1"]), helper.make_node("Mul", ["c1", "s1"], ["a"]),
             helper.make_node("Conv", names[1], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=channels),
             helper.make_node("Sigmoid", ["c2"], ["s2"]), helper.make_node("Mul", ["c2", "s2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_a_convolution_bias_becomes_a_channel_add_with_the_same_output():
    model = _conv_block()
    rewritten, fired = _apply(model, "conv-bias-add")
    convs = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    assert fired == 2 and len(convs) == 2 and all(len(n.input) == 2 for n in convs)
    assert [n.op_type for n in rewritten.graph.node].count("Add") == 2
    assert [a.i for n in convs for a in n.attribute if a.name == "group"] == [8]  # attributes kept
    x = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
    want = _run(model, x)
    assert want.std() > 0.3
    np.testing.assert_allclose(_run(rewritten, x, disabled_optimizers(typed(), "cuda")), want, rtol=1e-5, atol=1e-5)


def _optimized_ops(model: onnx.ModelProto, disabled: list[str], tmp_path) -> list[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                         disabled_optimizers=disabled)
    return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


def test_sessions_of_the_pass_keep_onnxruntime_from_folding_the_bias_back(tmp_path):
    rewritten, _ = _apply(_conv_block(), "conv-bias-add")
    assert "Add" not in _optimized_ops(rewritten, [], tmp_path)  # what ConvAddFusion would do
    assert disabled_optimizers(typed(), "cuda") == ["ConvAddFusion"]
    assert _optimized_ops(rewritten, disabled_optimizers(typed(), "cuda"), tmp_path).count("Add") == 2
    assert disabled_optimizers(typed(), "cpu") == []
    assert disabled_optimizers(typed({"fusions": "patch-matmul"}), "cuda") == []


def test_a_convolution_without_bias_is_left_alone():
    _, fired = _apply(_conv_block(bias=False), "conv-bias-add")
    assert fired == 0


def test_conv_algo_option_maps_to_cudnn_search_modes():
    assert conv_algo_search(typed()) == "HEURISTIC"
    assert conv_algo_search(typed({"conv_algo": "exhaustive"})) == "EXHAUSTIVE"
    with pytest.raises(InputError, match="conv_algo=fastest"):
        conv_algo_search(typed({"conv_algo": "fastest"}))


def test_fusion_option_picks_passes_in_their_fixed_order():
    assert fusion_passes(typed(), "cuda") == FUSION_PASSES
    assert fusion_passes(typed(), "cpu") == ()
    assert fusion_passes(typed({"fusions": "false"}), "cuda") == ()
    assert fusion_passes(typed({"fusions": True}), "cpu") == FUSION_PASSES
    assert fusion_passes(typed({"fusions": "qkv-attention, ort-fusions"}), "cuda") == ("ort-fusions", "qkv-attention")
    with pytest.raises(InputError, match="unknown pass"):
        fusion_passes(typed({"fusions": "ort-fusions,fast"}), "cuda")


def test_attention_option_maps_to_onnxruntime_backends():
    assert attention_kernel(typed()) == 0
    assert attention_kernel(typed({"attention": "efficient"})) == 2
    with pytest.raises(InputError, match="attention=fastest"):
        attention_kernel(typed({"attention": "fastest"}))
