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
from vlc.targets.onnxruntime.gpu_path import FUSION_PASSES, attention_kernel, fusion_passes

RNG = np.random.default_rng(1)


def _apply(model: onnx.ModelProto, rules: str) -> tuple[onnx.ModelProto, int]:
    from onnxscript.rewriter import pattern

    graph = ir.from_proto(onnx.shape_inference.infer_shapes(model))
    fired = pattern.RewriteRuleSet(list(RULES[rules])).apply_to_model(graph)
    common_passes.RemoveUnusedNodesPass()(graph)
    return ir.to_proto(graph), fired


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
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
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)],
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


def test_fusion_option_picks_passes_in_their_fixed_order():
    assert fusion_passes({}, "cuda") == FUSION_PASSES
    assert fusion_passes({}, "cpu") == ()
    assert fusion_passes({"fusions": "false"}, "cuda") == ()
    assert fusion_passes({"fusions": True}, "cpu") == FUSION_PASSES
    assert fusion_passes({"fusions": "qkv-attention, ort-fusions"}, "cuda") == ("ort-fusions", "qkv-attention")
    with pytest.raises(InputError, match="unknown pass"):
        fusion_passes({"fusions": "ort-fusions,fast"}, "cuda")


def test_attention_option_maps_to_onnxruntime_backends():
    assert attention_kernel({}) == 0
    assert attention_kernel({"attention": "efficient"}) == 2
    with pytest.raises(InputError, match="attention=fastest"):
        attention_kernel({"attention": "fastest"})
