"""Pattern -> ai.vlc node -> expanded back keeps numerics in ONNX Runtime; counts are exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from plugin_models import EXPECTED_FUSED, feeds, op_types, run_ort

from vlc.errors import InputError
from vlc.plugins import (
    DOMAIN,
    apply_plugins,
    expand,
    fuse,
    load_decisions,
    registered_plugins,
)


def _fused(proto):
    model = ir.serde.deserialize_model(proto)
    counts = fuse(model, registered_plugins().values())
    return model, counts


def test_fuse_counts_each_pattern_exactly(exported):
    _, _, proto = exported
    model, counts = _fused(proto)
    assert counts == EXPECTED_FUSED
    vlc_ops = sorted(n.op_type for n in model.graph if n.domain == DOMAIN)
    assert vlc_ops == ["Gelu", "Gelu", "LayerNorm", "LayerNorm", "SiLU"]
    approx = sorted(n.attributes.get_string("approximate") for n in model.graph if n.op_type == "Gelu")
    assert approx == ["none", "tanh"]
    # the QuickGELU and Sigmoid-of-another-tensor look-alikes are left alone
    assert sum(1 for n in model.graph if n.op_type == "Sigmoid" and n.domain == "") == 2


def test_expand_back_keeps_numerics(exported):
    _, _, proto = exported
    inputs = feeds()
    reference = run_ort(proto, inputs)
    assert reference.std() > 0.5  # outputs with real spread, not a degenerate check
    model, _ = _fused(proto)
    restored = expand(ir.serde.serialize_model(model))
    assert not any(n.domain == DOMAIN for n in restored.graph.node)
    assert DOMAIN not in {o.domain for o in restored.opset_import}
    np.testing.assert_allclose(run_ort(restored, inputs), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["onnxruntime", "ascend310", "ascend310p", "trt", "trt-rtx", "torch"])
def test_lowering_without_kernels_keeps_numerics(exported, target):
    _, _, proto = exported
    inputs = feeds()
    lowered, report = apply_plugins(proto, target, enabled=[])  # every kernel off
    assert isinstance(lowered, onnx.ModelProto)
    assert report.enabled == []
    assert report.fused == EXPECTED_FUSED
    assert sum(report.native.values()) + sum(report.expanded.values()) == 5
    assert not any(n.domain == DOMAIN for n in lowered.graph.node)
    np.testing.assert_allclose(run_ort(lowered, inputs), run_ort(proto, inputs), rtol=1e-5, atol=1e-5)


def test_ascend_forms(exported):
    _, opset, proto = exported
    lowered, report = apply_plugins(proto, "ascend310p")
    ops = op_types(lowered)
    assert report.native == {"silu": 1, "gelu": 2, "layernorm": 2}
    if opset in (17, 18):
        assert ops.count("LayerNormalization") == 2  # parsed by ATC into LayerNorm
    else:
        assert "LayerNormalization" not in ops and ops.count("ReduceMean") == 4
    # the tanh GELU in the arrangement GeluFusionPass fuses: Pow -> Mul -> Add -> Mul -> Tanh
    by_output = {o: n for n in lowered.graph.node for o in n.output}
    tanh = next(n for n in lowered.graph.node if n.op_type == "Tanh")
    chain = []
    node = by_output[tanh.input[0]]
    while node.op_type != "Pow":
        chain.append(node.op_type)
        node = next(by_output[i] for i in node.input if i in by_output and by_output[i].op_type != "Constant")
    assert chain == ["Mul", "Add", "Mul"]


def test_trt_kernels_on_request_become_plugin_nodes(exported):
    _, _, proto = exported
    lowered, report = apply_plugins(proto, "trt", enabled=["silu", "gelu", "layernorm"])
    assert report.plugin == {"silu": 1, "gelu": 2, "layernorm": 2}
    nodes = [n for n in lowered.graph.node if n.domain == DOMAIN]
    assert sorted(n.op_type for n in nodes) == ["Gelu", "Gelu", "LayerNorm", "LayerNorm", "SiLU"]
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["plugin_namespace"] == b"vlc" and attrs["plugin_version"] == b"1" and attrs["aot"] == 1
        if n.op_type == "Gelu":
            assert set(attrs) == {"plugin_namespace", "plugin_version", "aot", "approx_tanh"}
        if n.op_type == "LayerNorm":
            assert len(n.input) == 3 and set(attrs) == {"plugin_namespace", "plugin_version", "aot", "epsilon"}
    assert sorted(onnx.helper.get_attribute_value(a) for n in nodes if n.op_type == "Gelu"
                  for a in n.attribute if a.name == "approx_tanh") == [0, 1]


def test_defaults_follow_the_measured_decisions(exported):
    _, _, proto = exported
    _, report = apply_plugins(proto, "trt")
    decisions = load_decisions()["decisions"]
    on = sorted(n for n in ("silu", "gelu") if decisions.get(n, {}).get("trt", {}).get("on", False))
    assert sorted(report.enabled) == on  # layernorm is native-preferred: never on by default
    assert sorted(report.plugin) == on


def test_trt_one_kernel_named_others_native(exported):
    _, _, proto = exported
    lowered, report = apply_plugins(proto, "trt", enabled=["silu"])
    assert report.plugin == {"silu": 1} and report.native == {"gelu": 2, "layernorm": 2}
    assert [n.op_type for n in lowered.graph.node if n.domain == DOMAIN] == ["SiLU"]


def test_ascend_fastgelu_on_request(exported):
    _, _, proto = exported
    lowered, report = apply_plugins(proto, "ascend310", enabled=["gelu"])
    assert report.plugin == {"gelu": 2}
    assert op_types(lowered).count("npu::NPUFastGelu") == 2


def test_apply_plugins_on_onnx_ir_model_in_place(exported):
    _, _, proto = exported
    model = ir.serde.deserialize_model(proto)
    same, report = apply_plugins(model, "onnxruntime")
    assert same is model and report.fused == EXPECTED_FUSED


@pytest.mark.parametrize("target, enabled, message", [
    ("nosuch", None, "unknown target 'nosuch'"),
    ("trt", ["swish"], "unknown plugin 'swish'"),
    ("ascend310", ["layernorm"], "plugin 'layernorm' has no kernel for target 'ascend310'"),
    ("onnxruntime", ["silu"], "plugin 'silu' has no kernel for target 'onnxruntime'"),
])
def test_bad_requests_are_one_clear_line(exported, target, enabled, message):
    _, _, proto = exported
    with pytest.raises(InputError) as info:
        apply_plugins(proto, target, enabled)
    assert message in info.value.line()


def test_layernorm_on_another_axis_is_not_fused():
    from onnx import TensorProto, helper, numpy_helper

    scale = numpy_helper.from_array(np.linspace(0.5, 1.5, 4).astype(np.float32).reshape(4, 1), "s")
    graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=1, epsilon=1e-5)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8])], initializer=[scale])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _, counts = _fused(proto)
    assert counts["layernorm"] == 0
