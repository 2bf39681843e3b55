"""Graph passes keep numerics; the pass manager counts nodes; large graphs use external data."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from vlc.accuracy import compare_outputs, default_tolerance
from vlc.frontend import export as export_mod
from vlc.frontend.passes import run_passes
from vlc.spec import Precision


def _decomposed_layernorm(dim: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(1, 0.2, dim).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.normal(0, 0.2, dim).astype(np.float32), "beta"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes")]
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=1),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["var"], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["n"]),
        helper.make_node("Mul", ["n", "gamma"], ["s"]),
        helper.make_node("Add", ["s", "beta"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "ln",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, dim])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, dim])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _run(model: onnx.ModelProto, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_fuse_layernorm_fuses_and_keeps_numerics():
    proto = _decomposed_layernorm()
    feeds = {"x": np.random.default_rng(1).normal(3, 2, (4, 8, 16)).astype(np.float32)}
    before = _run(proto, feeds)
    model, reports = run_passes(ir.serde.deserialize_model(proto), ["fuse-layernorm", "remove-unused"])
    after_proto = ir.serde.serialize_model(model)
    assert [n.op_type for n in after_proto.graph.node] == ["LayerNormalization"]
    assert reports[0].nodes_before == 9 and reports[0].nodes_after < 9
    report = compare_outputs(_run(after_proto, feeds), before, default_tolerance(Precision.FP32))
    assert report.passed and report.outputs[0].ref_std > 0.1


def test_large_graphs_are_saved_with_external_data(tmp_path, monkeypatch):
    proto = _decomposed_layernorm()
    monkeypatch.setattr(export_mod, "TWO_GB", 16)  # stand for "over 2 GB" without writing 2 GB
    path = export_mod.save_model(ir.serde.deserialize_model(proto), tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").is_file()
    feeds = {"x": np.random.default_rng(1).normal(0, 1, (2, 8, 16)).astype(np.float32)}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, feeds)[0], _run(proto, feeds)["y"], rtol=1e-6)
