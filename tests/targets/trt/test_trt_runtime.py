"""Run and profile on a GPU: skipped, with the reason printed, where no GPU or runtime exists."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import tiny_models as tm  # put on sys.modules by conftest.py

from vlc.accuracy import compare_outputs, default_tolerance
from vlc.errors import InputError
from vlc.frontend.precision.check import run_onnx
from vlc.plugin_manager import get_target
from vlc.spec import Precision, TargetSpec
from vlc.target import CompileSource
from vlc.timing import ProfileSettings


def _runtime_reason() -> str | None:
    from vlc.targets.trt.cuda import gpus

    found, why = gpus()
    if not found:
        return f"no GPU: {why}"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA"
    return None


REASON = _runtime_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"TensorRT run/profile needs a GPU: {REASON}")
# `trt` needs TensorRT 10/11; a machine with only TensorRT-RTX runs the same tests through `trt-rtx`
TARGET = "trt" if importlib.util.find_spec("tensorrt") is not None else "trt-rtx"


@pytest.fixture(scope="module")
def artifacts(tiny_graphs, tmp_path_factory):
    from vlc.targets.trt.cuda import gpus
    from vlc.targets.trt.presets import preset_for_capability

    preset = preset_for_capability(gpus()[0][0].compute_capability)
    if not preset:
        pytest.skip(f"no preset for {gpus()[0][0].describe()}")
    out = {}
    for precision in ("fp32", "fp16"):
        spec = TargetSpec(TARGET, Precision(precision), preset=preset[0], batch=(1, 4, 8))
        source = CompileSource(tiny_graphs["transformer"], "transformer", tm.input_specs("transformer"))
        out[precision] = get_target(TARGET).compile(source, spec, tmp_path_factory.mktemp("rt") / precision)
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_run_matches_onnxruntime(tiny_graphs, artifacts, precision):
    feeds = tm.generate("transformer", 3, seed=11)
    outputs = get_target(TARGET).run(artifacts[precision], feeds)
    report = compare_outputs(outputs, run_onnx(tiny_graphs["transformer"], feeds), default_tolerance(precision))
    assert report.passed, report.to_json()


def test_shape_outside_profile_is_an_error(artifacts):
    with pytest.raises(InputError, match="outside"):
        get_target(TARGET).run(artifacts["fp32"], tm.generate("transformer", 9))


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_profile(artifacts, cuda_graph):
    settings = ProfileSettings(warmup=5, iterations=20, cuda_graph=cuda_graph, per_layer=not cuda_graph)
    result = get_target(TARGET).profile(artifacts["fp16"], tm.generate("transformer", 4), settings)
    assert set(result.breakdown) >= {"h2d", "compute", "d2h", "enqueue"}
    assert result.latency.count == 20 and result.latency.median > 0
    assert "GPU Compute Time" in result.extra["trtexec_summary"]
    if not cuda_graph:
        assert result.extra["layers"]
    assert np.isfinite(result.throughput)
    assert result.extra["latency_source"] == ("vlc CUDA-graph replays (Polygraphy has no CUDA graphs)" if cuda_graph
                                              else "Polygraphy TrtRunner.infer")


def test_outputs_are_copies_not_the_runners_buffers(artifacts):
    target = get_target(TARGET)
    session = target.open(artifacts["fp32"])
    try:
        first = target.run(artifacts["fp32"], tm.generate("transformer", 2, seed=1), session=session)
        kept = {k: v.copy() for k, v in first.items()}
        target.run(artifacts["fp32"], tm.generate("transformer", 2, seed=2), session=session)
    finally:
        session.close()
    for name, value in first.items():
        np.testing.assert_array_equal(value, kept[name])


def test_renamed_loop_input_runs_and_matches_onnxruntime(tmp_path):
    from tests.targets.trt.test_trt_parser_rewrites import _loop_fed
    from vlc.targets.trt.cuda import gpus
    from vlc.targets.trt.presets import preset_for_capability

    path = _loop_fed(tmp_path)
    spec = TargetSpec(TARGET, Precision.FP32, preset=preset_for_capability(gpus()[0][0].compute_capability)[0],
                      batch=(1, 2, 4))
    artifact = get_target(TARGET).compile(CompileSource(path, "loop_fed", []), spec, tmp_path / "out")
    assert artifact.manifest["extra"]["trt"]["network_names"]["inputs"] == {"cond": "cond_in"}
    feeds = {"cond": np.array(True), "y": np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)}
    outputs = get_target(TARGET).run(artifact, feeds)
    np.testing.assert_allclose(outputs["res"], run_onnx(path, feeds)["res"], rtol=1e-5, atol=1e-6)
