"""Small ONNX graphs and an ONNX Runtime before/after comparison for the patch tests."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tensor(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


F, I64, I32, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL


def run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def copy(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def assert_same(before, after, feeds, rtol=1e-6, atol=1e-6):
    """Same outputs in ONNX Runtime, and outputs with real spread (not a vacuous check)."""
    a, b = run(before, feeds), run(after, feeds)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_allclose(b[name], a[name], rtol=rtol, atol=atol, err_msg=name)
        if a[name].dtype.kind == "f" and a[name].size > 1:
            finite = a[name][np.isfinite(a[name])]
            assert np.std(finite) > 1e-6, f"{name} has no spread: the comparison proves nothing"


def ops(model):
    return [n.op_type for n in model.graph.node]
