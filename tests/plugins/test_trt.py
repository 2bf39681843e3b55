"""TensorRT-RTX and the vlc plugin nodes: what builds on this CPU-only machine and what is refused.

TensorRT-RTX 1.7 has no working Python plugin module (``tensorrt_rtx.plugin`` re-exports
``tensorrt_rtx_bindings.plugin``, which its wheel lacks). Until it has one, these tests pin the
clear error vlc gives; the native lowering still builds a real engine for compute capability 8.6.
"""

from __future__ import annotations

import onnx
import pytest
from plugin_models import export

from tests.conftest import rtx_has_python_plugins
from vlc.errors import CompileError
from vlc.plugins import apply_plugins
from vlc.plugins import trt as trt_plugins

trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed (pip install 'vlc[trt-rtx]')")


@pytest.fixture(scope="module")
def model17():
    return export("torchscript", 17)


def _parse(model: onnx.ModelProto):
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(model.SerializeToString())
    errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
    return builder, network, ok, errors


@pytest.mark.skipif(rtx_has_python_plugins(), reason="this TensorRT-RTX has tensorrt_rtx.plugin: "
                                                  "the error path no longer applies")
def test_rtx_without_python_plugins_gives_one_clear_error(model17):
    lowered, report = apply_plugins(model17, "trt-rtx", enabled=["silu", "gelu"])
    assert report.plugin == {"silu": 1, "gelu": 2}
    with pytest.raises(CompileError) as info:
        trt_plugins.prepare(trt, lowered)
    line = info.value.line()
    assert "tensorrt_rtx" in line and "cannot load Python plugins" in line
    assert "compile with the vlc plugins off (the default)" in line


def test_rtx_parser_maps_plugin_nodes_by_name_and_namespace(model17):
    # Unregistered, the node reaches TensorRT's fallback plugin importer, which looks up the
    # creator by op type + plugin_namespace: that is the contract the lowering relies on.
    lowered, _ = apply_plugins(model17, "trt-rtx", enabled=["silu"])
    _, _, ok, errors = _parse(lowered)
    assert not ok
    assert any("Plugin not found" in e for e in errors), errors


def test_graph_without_plugin_nodes_needs_no_python_plugins(model17):
    lowered, _ = apply_plugins(model17, "trt-rtx")
    assert trt_plugins.prepare(trt, lowered) == []


def test_native_lowering_builds_an_rtx_engine_on_cpu(model17):
    lowered, report = apply_plugins(model17, "trt-rtx")
    assert report.native == {"silu": 1, "gelu": 2, "layernorm": 2}
    builder, network, ok, errors = _parse(lowered)
    assert ok, errors
    layer_types = {network.get_layer(i).type.name for i in range(network.num_layers)}
    assert "NORMALIZATION" in layer_types  # LayerNormalization -> TensorRT's native layer
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt.ComputeCapability.SM86, 0)
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 5, 16), (2, 5, 16), (4, 5, 16))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    assert engine is not None and engine.nbytes > 0
