"""Hand-made corpus graphs (onnx.helper) for what the exporters' files lack.

If/Loop control flow, int32 and scalar inputs, several inputs and outputs, batched einsum, an
AveragePool whose kernel exceeds its input. Weights are seeded and spread, so numerics compare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

OPSET, IR = 17, 8


def _h() -> Any:
    from onnx import helper

    return helper


def _model(graph: Any) -> Any:
    h = _h()
    return h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], ir_version=IR,
                        producer_name="onnx.helper")


def _init(name: str, array: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(array, name)


def _rng() -> np.random.Generator:
    return np.random.default_rng(17)


def _vi(name: str, elem: int, shape: list[Any]) -> Any:
    return _h().make_tensor_value_info(name, elem, shape)


def if_on_data() -> Any:
    """y = If(sum(x) > 0, x @ W, relu(x) * 0.5): a data-dependent branch, both fp32 subgraphs."""
    from onnx import TensorProto as P

    h = _h()
    w = _rng().normal(size=(8, 8)).astype(np.float32)
    then = h.make_graph([h.make_node("MatMul", ["x", "W"], ["t"])], "then", [],
                        [_vi("t", P.FLOAT, ["batch", 8])])
    other = h.make_graph([h.make_node("Relu", ["x"], ["r"]),
                          h.make_node("Mul", ["r", "half"], ["e"])], "else", [],
                         [_vi("e", P.FLOAT, ["batch", 8])])
    nodes = [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             h.make_node("Greater", ["s", "zero"], ["c"]),
             h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    graph = h.make_graph(nodes, "if_on_data", [_vi("x", P.FLOAT, ["batch", 8])],
                         [_vi("y", P.FLOAT, ["batch", 8])],
                         [_init("W", w), _init("zero", np.array(0, np.float32)),
                          _init("half", np.array(0.5, np.float32))])
    return _model(graph)


def loop_recurrence() -> Any:
    """Three steps of h = tanh(h @ W + b) in a Loop, with the trip count as an initializer."""
    from onnx import TensorProto as P

    h = _h()
    rng = _rng()
    w = (rng.normal(size=(8, 8)) * 0.5).astype(np.float32)
    b = rng.normal(size=(8,)).astype(np.float32)
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]),
         h.make_node("MatMul", ["h_in", "W"], ["m"]),
         h.make_node("Add", ["m", "b"], ["a"]),
         h.make_node("Tanh", ["a"], ["h_out"])],
        "body", [_vi("i", P.INT64, []), _vi("cond_in", P.BOOL, []),
                 _vi("h_in", P.FLOAT, ["batch", 8])],
        [_vi("cond_out", P.BOOL, []), _vi("h_out", P.FLOAT, ["batch", 8])])
    nodes = [h.make_node("Loop", ["trips", "cond"], ["y"], body=body)]
    graph = h.make_graph(nodes, "loop_recurrence", [_vi("x", P.FLOAT, ["batch", 8])],
                         [_vi("y", P.FLOAT, ["batch", 8])],
                         [_init("W", w), _init("b", b), _init("trips", np.array(3, np.int64)),
                          _init("cond", np.array(True))])
    # the loop-carried value starts at x
    graph.node[0].input.append("x")
    return _model(graph)


def int32_scalar_inputs() -> Any:
    """y = conv(image) * scale + offset, with an fp32 scalar and an int32 scalar input."""
    from onnx import TensorProto as P

    h = _h()
    w = _rng().normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [h.make_node("Conv", ["image", "W"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Mul", ["c", "scale"], ["m"]),
             h.make_node("Cast", ["offset"], ["o"], to=P.FLOAT),
             h.make_node("Add", ["m", "o"], ["y"])]
    graph = h.make_graph(nodes, "int32_scalar_inputs",
                         [_vi("image", P.FLOAT, ["batch", 3, 16, 16]), _vi("scale", P.FLOAT, []),
                          _vi("offset", P.INT32, [])],
                         [_vi("y", P.FLOAT, ["batch", 4, 16, 16])], [_init("W", w)])
    return _model(graph)


def multi_io() -> Any:
    """Two inputs (one int32 token id tensor) and three outputs of different ranks."""
    from onnx import TensorProto as P

    h = _h()
    rng = _rng()
    table = rng.normal(size=(50, 16)).astype(np.float32)
    w = rng.normal(size=(16, 4)).astype(np.float32)
    nodes = [h.make_node("Gather", ["table", "ids"], ["emb"]),
             h.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
             h.make_node("Add", ["pooled", "feat"], ["mixed"]),
             h.make_node("MatMul", ["mixed", "W"], ["logits"]),
             h.make_node("Softmax", ["logits"], ["probs"], axis=-1),
             h.make_node("ArgMax", ["logits"], ["label"], axis=-1, keepdims=0)]
    graph = h.make_graph(nodes, "multi_io",
                         [_vi("ids", P.INT32, ["batch", 6]), _vi("feat", P.FLOAT, ["batch", 16])],
                         [_vi("logits", P.FLOAT, ["batch", 4]), _vi("probs", P.FLOAT, ["batch", 4]),
                          _vi("label", P.INT64, ["batch"])],
                         [_init("table", table), _init("W", w)])
    return _model(graph)


def einsum_batched() -> Any:
    """Attention scores the way einops-style code writes them: ellipsis and bhid forms."""
    from onnx import TensorProto as P

    h = _h()
    nodes = [h.make_node("Einsum", ["q", "k"], ["scores"], equation="...pd,...qd->...pq"),
             h.make_node("Softmax", ["scores"], ["attn"], axis=-1),
             h.make_node("Einsum", ["attn", "k"], ["ctx"], equation="bhij,bhjd->bhid")]
    graph = h.make_graph(nodes, "einsum_batched",
                         [_vi("q", P.FLOAT, ["batch", 2, 5, 8]), _vi("k", P.FLOAT, ["batch", 2, 6, 8])],
                         [_vi("ctx", P.FLOAT, ["batch", 2, 5, 8])])
    return _model(graph)


def avgpool_oversized_kernel() -> Any:
    """A head pooling 7x7 maps with an 8x8 ceil-mode kernel (as some Caffe/Paddle exports do)."""
    from onnx import TensorProto as P

    h = _h()
    w = _rng().normal(size=(8, 3, 3, 3)).astype(np.float32)
    nodes = [h.make_node("Conv", ["x", "W"], ["c"], strides=[2, 2]),
             h.make_node("Relu", ["c"], ["r"]),
             h.make_node("AveragePool", ["r"], ["p"], kernel_shape=[8, 8], strides=[8, 8],
                         ceil_mode=1),
             h.make_node("Flatten", ["p"], ["y"])]
    graph = h.make_graph(nodes, "avgpool_oversized_kernel", [_vi("x", P.FLOAT, ["batch", 3, 15, 15])],
                         [_vi("y", P.FLOAT, ["batch", 8])], [_init("W", w)])
    return _model(graph)


HANDMADE: dict[str, Callable[[], Any]] = {
    "hand-if-on-data": if_on_data,
    "hand-loop-recurrence": loop_recurrence,
    "hand-int32-scalar-inputs": int32_scalar_inputs,
    "hand-multi-io": multi_io,
    "hand-einsum-batched": einsum_batched,
    "hand-avgpool-oversized-kernel": avgpool_oversized_kernel,
}
