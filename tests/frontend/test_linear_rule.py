"""The linear-to-matmul pass: the exporter's Reshape -> Gemm -> Reshape back to MatMul + Add."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vlc.frontend.passes import run_passes

RNG = np.random.default_rng(0)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def _model(nodes, inits, in_shape, out_shapes) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in out_shapes], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    return onnx.shape_inference.infer_shapes(model)


def _linears(restore: list[int], trans_b: int, bias: bool, k: int = 16, n: int = 24, shared: int = 2):
    """`shared` Linears reading one flattening Reshape of x [batch, 5, k], each restored to `restore`."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["x2d"])]
    inits = [_init("flat", np.array([-1, k], np.int64)), _init("restore", np.array(restore, np.int64))]
    outputs = []
    for i in range(shared):
        w = RNG.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
        inputs = ["x2d", f"w{i}"] + ([f"b{i}"] if bias else [])
        inits.append(_init(f"w{i}", w))
        if bias:
            inits.append(_init(f"b{i}", RNG.standard_normal(n).astype(np.float32)))
        nodes += [helper.make_node("Gemm", inputs, [f"g{i}"], transB=trans_b),
                  helper.make_node("Reshape", [f"g{i}", "restore"], [f"y{i}"])]
        outputs.append((f"y{i}", None))
    return _model(nodes, inits, ["batch", 5, k], outputs)


def _rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    rewritten, _ = run_passes(ir.from_proto(model), ["linear-to-matmul"])
    return ir.to_proto(rewritten)


def _outputs(model: onnx.ModelProto, batch: int) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(batch).standard_normal((batch, 5, 16)).astype(np.float32)
    return session.run(None, {"x": x})


@pytest.mark.parametrize("restore", [[-1, 5, 24], [-1, 5, 4, 6]], ids=["same-rank", "into-heads"])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_flattened_linears_become_matmuls_with_the_same_outputs(restore, trans_b, bias):
    model = _linears(restore, trans_b, bias)
    rewritten = _rewrite(model)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Gemm" not in ops and ops.count("MatMul") == 2
    assert ops.count("Add") == (2 if bias else 0)
    for batch in (1, 3):  # the batch stays dynamic
        for got, want in zip(_outputs(rewritten, batch), _outputs(model, batch)):
            assert got.shape == want.shape and np.abs(want).max() > 0.1
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_restoring_reshape_that_mixes_rows_is_left_alone():
    # [batch*5, 24] -> [-1, 4, 6, 5]: no trailing dims multiply to 24, rows do not stay whole
    model = _linears([-1, 4, 6, 5], trans_b=1, bias=True, shared=1)
    assert [n.op_type for n in _rewrite(model).graph.node].count("Gemm") == 1
