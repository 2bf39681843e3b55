"""vlc's custom-operator plugins in the trt build: real TensorRT-RTX engines on the CPU (cc 8.6).

The graph about to be parsed is rewritten by apply_plugins; with the default (every kernel off for
trt in plugins/decisions.json) fused patterns are lowered to TensorRT's native forms, and the
artifact keeps the graph that was parsed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import rtx_has_python_plugins
from vlc.errors import CompileError, InputError
from vlc.plugin_manager import get_target
from vlc.spec import Precision, TargetSpec

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                                reason="tensorrt_rtx is not installed (pip install tensorrt-rtx-cu13)")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from vlc.frontend.pipeline import prepare

    cache = tmp_path_factory.mktemp("plugins-cache")
    return {name: prepare(f"tests/models.py:{name}", cache_dir=cache) for name in ("cnn", "transformer")}


def _compile(source, out, **options):
    spec = TargetSpec("trt-rtx", Precision.FP32, batch=(1, 2, 4), options=options)
    return get_target("trt-rtx").compile(source, spec, out)


def _ort(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_default_lowers_natively_and_keeps_numerics(sources, tmp_path):
    source = sources["transformer"]
    artifact = _compile(source, tmp_path / "transformer")
    assert artifact.file("main").stat().st_size > 1000
    plugins = artifact.manifest["extra"]["plugins"]
    assert plugins["target"] == "trt-rtx" and plugins["enabled"] == [] and plugins["plugin"] == {}
    assert plugins["fused"]["gelu"] > 0 and plugins["fused"]["layernorm"] > 0
    assert plugins["native"]["gelu"] == plugins["fused"]["gelu"]
    assert plugins["graph"] == "model.plugins.onnx" == artifact.manifest["extra"]["trt"]["graph"]
    parsed = artifact.file("graph")
    nodes = onnx.load(str(parsed)).graph.node
    assert not any(n.domain == "ai.vlc" for n in nodes)
    norms = {n.name for n in nodes if n.op_type == "LayerNormalization"}
    assert len(norms) == plugins["native"]["layernorm"]
    # the engine was built from the saved graph: its layers name that graph's nodes
    layers = json.loads(artifact.file("layers").read_text())["layers"]
    assert norms <= {name for layer in layers for name in layer["onnx_layers"]}
    feeds = {k: np.asarray(v) for k, v in source.model.generate_inputs(2, seed=0).items()}
    reference, lowered = _ort(source.onnx_path, feeds), _ort(parsed, feeds)
    for ref, out in zip(reference, lowered):
        assert ref.std() > 1e-3  # outputs with real spread
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("value, enabled", [("default", []), ("none", [])])
def test_cnn_silu_builds_with_kernels_off(sources, tmp_path, value, enabled):
    artifact = _compile(sources["cnn"], tmp_path / value, plugins=value)
    plugins = artifact.manifest["extra"]["plugins"]
    assert plugins["enabled"] == enabled and plugins["fused"]["silu"] > 0
    assert plugins["native"]["silu"] == plugins["fused"]["silu"]
    assert "[vlc] plugins: fused" in (artifact.path / artifact.manifest["build_log"]).read_text()


@pytest.mark.skipif(rtx_has_python_plugins(), reason="this TensorRT-RTX has tensorrt_rtx.plugin: "
                                                  "the error path no longer applies")
def test_silu_kernel_on_rtx_is_one_clear_error(sources, tmp_path):
    out = tmp_path / "silu"
    with pytest.raises(CompileError) as info:
        _compile(sources["cnn"], out, plugins="silu")
    line = info.value.line()
    assert "\n" not in line
    assert "tensorrt_rtx" in line and "cannot load Python plugins" in line
    assert "compile with the vlc plugins off (the default)" in line
    assert not out.exists() and not any(p.name.startswith(".silu.building-") for p in tmp_path.iterdir())


def test_unknown_plugin_name(sources, tmp_path):
    out = tmp_path / "swish"
    with pytest.raises(InputError, match="unknown plugin 'swish'") as info:
        _compile(sources["cnn"], out, plugins="silu,swish")
    assert "silu" in info.value.line() and "\n" not in info.value.line()
    assert list(tmp_path.iterdir()) == []
