"""FLOPs counted from ONNX graphs with known answers; device peaks and utilisation."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from vlc.flops import count_flops, cpu_peak, device_peak, find_device, peak_table, utilisation


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(a, n) for n, a in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _w(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_gemm_with_transposed_weight():
    model = _model([helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
                   [("W", _w(32, 64)), ("b", _w(32))])
    count = count_flops(model, 4)
    assert count.total == 2 * 4 * 64 * 32
    assert count.per_sample == 2 * 64 * 32
    assert count_flops(model, 16).total == 2 * 16 * 64 * 32  # the batch size is applied, not cached
    assert not count.unresolved


def test_grouped_strided_conv():
    # x [N,4,16,16], W [8, 4/2, 3, 3], stride 2, pad 1 -> y [N,8,8,8]
    model = _model([helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2], group=2)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 16, 16])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [("W", _w(8, 2, 3, 3))])
    count = count_flops(model, 3)
    assert count.total == 2 * 3 * 8 * (8 * 8) * 2 * (3 * 3)
    assert count.by_op == {"Conv": count.total}


def test_attention_block_counts_projections_and_the_matmul_pair():
    """Single-head attention: Q/K/V projections, QKᵀ, softmax, ·V, output projection."""
    s, d = 10, 16
    nodes = [helper.make_node("MatMul", ["x", name], [out]) for name, out in
             (("Wq", "q"), ("Wk", "k"), ("Wv", "v"))]
    nodes += [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
              helper.make_node("MatMul", ["q", "kt"], ["scores"]),
              helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["ctx"]),
              helper.make_node("MatMul", ["ctx", "Wo"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", s, d])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [(n, _w(d, d)) for n in ("Wq", "Wk", "Wv", "Wo")])
    batch = 2
    projections = 4 * 2 * batch * s * d * d
    pair = 2 * (2 * batch * s * s * d)  # QKᵀ: [s,d]x[d,s]; P·V: [s,s]x[s,d]
    count = count_flops(model, batch)
    assert count.total == projections + pair
    # the graph is a real attention block: ONNX Runtime runs it with the shapes counted above
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": _w(batch, s, d)})
    assert y.shape == (batch, s, d)


def test_batched_matmul_broadcasts_leading_dims():
    model = _model([helper.make_node("MatMul", ["a", "B"], ["y"])],
                   [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4, 5, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [("B", _w(6, 7))])
    assert count_flops(model, 3).total == 2 * 3 * 4 * 5 * 6 * 7


def test_opset23_attention_operator():
    b, h, s, d = 2, 4, 8, 16
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"])
    shape = [b, h, s, d]
    model = _model([node], [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "qkv"],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], opset=23)
    assert count_flops(model, b).total == 2 * b * h * s * s * d * 2


def test_counting_goes_on_past_onnxruntime_contrib_attention():
    """Fusions leave com.microsoft Attention nodes, which ONNX shape inference cannot see through."""
    b, s, width, hidden = 2, 10, 24, 32
    nodes = [helper.make_node("Attention", ["x", "Wqkv", "bqkv"], ["ctx"], domain="com.microsoft", num_heads=4),
             helper.make_node("MatMul", ["ctx", "Wo"], ["h"]),
             helper.make_node("MatMul", ["h", "Wo2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", s, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, n) for n, a in
                               (("Wqkv", _w(width, 3 * hidden)), ("bqkv", _w(3 * hidden)),
                                ("Wo", _w(hidden, hidden)), ("Wo2", _w(hidden, 8)))])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=10)
    count = count_flops(model, b)
    attention = 2 * b * s * width * 3 * hidden + 2 * 2 * b * s * s * hidden
    assert not count.unresolved
    assert count.by_op == {"Attention": attention, "MatMul": 2 * b * s * hidden * hidden + 2 * b * s * hidden * 8}


def test_unknown_shapes_are_listed_not_guessed():
    model = _model([helper.make_node("MatMul", ["a", "b"], ["y"])],
                   [helper.make_tensor_value_info("a", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    count = count_flops(model, 2)
    assert count.total == 0 and count.unresolved == ["MatMul y"]


def test_peak_table_entries_have_sources_and_match_driver_names():
    for entry in peak_table()["devices"]:
        assert entry["source"] and entry["match"]
        assert set(entry["peak_tflops"]) == {"fp32", "tf32", "fp16", "bf16", "int8"}
    expect = {"NVIDIA A10": ("NVIDIA A10", 125.0), "NVIDIA A100-SXM4-80GB": ("NVIDIA A100", 312.0),
              "NVIDIA H100 80GB HBM3": ("NVIDIA H100 SXM", 989.4), "NVIDIA H100 PCIe": ("NVIDIA H100 PCIe", 756.0),
              "NVIDIA H200": ("NVIDIA H200 SXM", 989.4), "NVIDIA L4": ("NVIDIA L4", 121.0),
              "NVIDIA GeForce RTX 4090": ("NVIDIA GeForce RTX 4090", 165.2),
              "Ascend 310P3": ("Ascend 310P3", 70.0), "Ascend 310": ("Ascend 310", 11.0)}
    for name, (entry_name, fp16) in expect.items():
        entry = find_device(name)
        assert entry is not None and entry["name"] == entry_name, name
        assert device_peak(name, "fp16").tflops == fp16
    assert device_peak("Ascend 310", "int8").tflops == 22.0
    assert find_device("NVIDIA A10G") is None  # not the A10: unknown rather than wrong
    assert device_peak("Ascend 310P3", "fp32").tflops is None


def test_cpu_peak_is_an_estimate_that_says_so():
    cpu = {"simd": ["avx512f", "avx2"], "max_ghz": 2.0, "usable_cores": 4, "vendor": "GenuineIntel"}
    peak = cpu_peak(cpu, "fp32")
    assert peak.tflops == pytest.approx(4 * 2.0 * 64 / 1000)
    assert peak.source.startswith("upper estimate:")
    assert cpu_peak({**cpu, "simd": ["avx2", "fma"]}, "fp32").tflops == pytest.approx(4 * 2.0 * 32 / 1000)
    assert cpu_peak(cpu, "fp16").tflops is None
    assert cpu_peak({"simd": [], "max_ghz": 2.0, "usable_cores": 4}, "fp32").tflops is None
    environment = {"cpu": cpu}
    assert device_peak("Intel Xeon", "fp32", environment, "cpu").tflops == peak.tflops


def test_utilisation():
    achieved, share = utilisation(2e9, 1000.0, device_peak("NVIDIA A10", "fp32"))
    assert achieved == pytest.approx(2.0)
    assert share == pytest.approx(2.0 / 31.2)
    assert utilisation(None, 1000.0, device_peak("NVIDIA A10", "fp32")) == (None, None)
    assert utilisation(2e9, 1000.0, device_peak("mystery", "fp32"))[1] is None
