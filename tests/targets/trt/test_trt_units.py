"""Pure parts of the trt target: presets, optimization profiles, trtexec-style summaries."""

from __future__ import annotations

import pytest

from vlc.errors import InputError
from vlc.signature import Signature, TensorSig
from vlc.spec import ShapeRange, TargetSpec
from vlc.targets.trt import gpu_presets
from vlc.targets.trt.builder import layers_from_log, optimization_profile
from vlc.targets.trt.summary import assemble


def test_presets_are_data_with_peaks():
    presets = gpu_presets()
    assert presets["a10"].compute_capability == (8, 6)
    assert presets["a10"].peak_for("fp16") == 125 and presets["a10"].sm_count == 72
    assert presets["a100"].compute_capability == (8, 0)
    assert presets["l4"].compute_capability == (8, 9)
    assert presets["h100"].compute_capability == (9, 0)
    assert presets["rtx4090"].compute_capability == (8, 9)
    assert presets["rtx5090"].compute_capability == (12, 0)
    assert presets["a10"].to_json()["compute_capability"] == "8.6"
    presets.pop("a10")
    assert "a10" in gpu_presets()  # callers get a copy


def test_target_default_preset_is_a10():
    from vlc.plugin_manager import get_target

    assert get_target("trt").default_preset == "a10" and "h100" in get_target("trt-rtx").presets


SIG = Signature((TensorSig("x", "float32", ("batch", 3, 8)), TensorSig("ids", "int64", ("batch", 4))),
                (TensorSig("y", "float32", ("batch", 2)),))


def test_profile_from_batch_and_shapes():
    spec = TargetSpec("trt", batch=(1, 4, 16),
                      shapes={"ids": ShapeRange((2, 4), (2, 4), (8, 4))})
    profile = optimization_profile(SIG, spec, None)
    assert profile["x"] == ShapeRange((1, 3, 8), (4, 3, 8), (16, 3, 8))
    assert profile["ids"].max == (8, 4)


def test_profile_from_model_defaults():
    profile = optimization_profile(SIG, TargetSpec("trt"), (1, 8, 32))
    assert profile["x"] == ShapeRange((1, 3, 8), (32, 3, 8), (32, 3, 8))


def test_profile_errors():
    with pytest.raises(InputError, match="no range"):
        optimization_profile(SIG, TargetSpec("trt"), None)
    fixed = Signature((TensorSig("x", "float32", (1, 3)),), ())
    with pytest.raises(InputError, match="fixed shape"):
        optimization_profile(fixed, TargetSpec("trt", batch=(1, 2, 4)), None)
    assert optimization_profile(fixed, TargetSpec("trt"), None)["x"] == ShapeRange((1, 3), (1, 3), (1, 3))


def test_layers_from_builder_log():
    text = ("Layers:\nName: /l/Gemm_myl0_1, LayerType: gemm, Inputs: [ { Name: x } ], Outputs: [], "
            "TacticName: __myelin_CASK_STUB, StreamId: 0, Metadata: [ONNX Layer: /l/Gemm]\x1f[ONNX Layer: /Relu]\n")
    assert layers_from_log(text) == [{"name": "/l/Gemm_myl0_1", "type": "gemm", "tactic": "__myelin_CASK_STUB",
                                      "stream": 0, "onnx_layers": ["/l/Gemm", "/Relu"]}]


def _samples(compute):
    n = len(compute)
    host = [0.1 + c + 0.05 + 0.01 for c in compute]  # the host clock also sees the synchronisation
    return {"latency": host, "h2d": [0.1] * n, "compute": compute, "d2h": [0.05] * n, "enqueue": [0.02] * n}


def test_trtexec_summary_fields_and_units():
    result = assemble(8, "cuda:0 A10", _samples([1.0, 1.01, 0.99, 1.0]), include_transfers=True,
                      host_walltime_s=0.01, cuda_graph=False, per_layer={"conv": [0.4, 0.6], "fc": [0.1, 0.1]})
    text = result.extra["trtexec_summary"]
    lines = text.splitlines()
    assert lines[0] == "[I] === Performance summary ==="
    assert lines[1] == "[I] Throughput: 400 qps"
    for label in ("Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency"):
        line = next(l for l in lines if l.startswith(f"[I] {label}: "))
        for field in ("min = ", "max = ", "mean = ", "median = ", "percentile(90%) = ",
                      "percentile(95%) = ", "percentile(99%) = "):
            assert field in line and line.endswith(" ms")
    assert "[I] Total Host Walltime: 0.01 s" in lines and "[I] Total GPU Compute Time: 0.004 s" in lines
    assert result.latency.median == pytest.approx(1.16)  # the host clock, not the sum of the CUDA events
    assert result.extra["timing"] == "host clock, synchronised after each call"
    assert set(result.breakdown) == {"h2d", "compute", "d2h", "enqueue"}
    assert result.extra["layers"][0]["name"] == "conv" and result.extra["layers"][0]["percent"] == pytest.approx(500 / 6)
    assert not result.warnings and "[W]" not in text


def test_unstable_gpu_compute_warns():
    result = assemble(1, "cuda:0", _samples([1.0, 2.0, 1.0, 2.0]), include_transfers=True,
                      host_walltime_s=1.0, cuda_graph=False)
    assert result.warnings and "GPU compute time varies" in result.warnings[0]
    assert "[W] * GPU compute time is unstable, with coefficient of variance = 33.333%." in \
        result.extra["trtexec_summary"]


def test_latency_without_transfers_is_the_host_clock_around_the_launch():
    samples = {"latency": [2.05, 2.05], "h2d": [], "compute": [2.0, 2.0], "d2h": [], "enqueue": [0.1, 0.1]}
    result = assemble(4, "cuda:0", samples, include_transfers=False, host_walltime_s=1.0, cuda_graph=True)
    assert result.latency.median == 2.05 and not result.includes_transfers
    assert result.breakdown["compute"].median == 2.0
    assert "h2d" not in result.breakdown and "excludes host-device transfers" in result.extra["trtexec_summary"]
