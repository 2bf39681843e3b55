"""Pure parts of the trt target: presets, optimization profiles, trtexec-style summaries."""

from __future__ import annotations

import importlib
import importlib.util

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
        line = next(row for row in lines if row.startswith(f"[I] {label}: "))
        for field in ("min = ", "max = ", "mean = ", "median = ", "percentile(90%) = ",
                      "percentile(95%) = ", "percentile(99%) = "):
            assert field in line and line.endswith(" ms")
    assert "[I] Total Host Walltime: 0.01 s" in lines and "[I] Total GPU Compute Time: 0.004 s" in lines
    assert result.latency.median == pytest.approx(1.16)  # the host clock, not the sum of the CUDA events
    assert result.extra["timing"] == "host clock, synchronised after each call"
    assert set(result.breakdown) == {"h2d", "compute", "d2h", "enqueue"}
    first_layer = result.extra["layers"][0]
    assert first_layer["name"] == "conv" and first_layer["percent"] == pytest.approx(500 / 6)
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


# ---- the run path's pure parts (the run itself needs a GPU: test_trt_runtime.py) ----------------

def test_engine_names_from_the_manifest():
    from vlc.targets.trt.runtime import tensor_names

    extra = {"trt": {"network_names": {"inputs": {"cond": "cond_in"}, "outputs": {}}}}
    assert tensor_names(extra) == ({"cond": "cond_in"}, {})
    assert tensor_names({"trt": {}}) == ({}, {})  # artifacts from before the names were kept


def test_shape_outside_the_profile_is_one_line():
    from vlc.targets.trt.runtime import check_profile_shape

    check_profile_shape("x", (4, 3), (1, 3), (8, 3))
    with pytest.raises(InputError, match=r"input 'x' shape \[9, 3\] is outside the engine's profile "
                                         r"\[1, 3\]..\[8, 3\]") as info:
        check_profile_shape("x", (9, 3), (1, 3), (8, 3))
    assert "--batch" in info.value.fix
    with pytest.raises(InputError, match="outside"):
        check_profile_shape("x", (4,), (1, 3), (8, 3))  # rank


def test_polygraphy_messages_go_to_vlcs_log_not_stdout(capsys, caplog):
    from polygraphy.logger import G_LOGGER

    from vlc.targets.trt.runtime import routed

    before = (G_LOGGER.use_python_logging_system, G_LOGGER.module_severity)
    with caplog.at_level("DEBUG", logger="vlc"), routed(G_LOGGER):
        G_LOGGER.warning("tensor x has a strange shape")
        G_LOGGER.info("loading")  # below the session's severity: dropped
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records] == ["polygraphy: tensor x has a strange shape"]
    assert caplog.records[0].levelname == "WARNING"
    assert (G_LOGGER.use_python_logging_system, G_LOGGER.module_severity) == before


def test_build_log_capture_keeps_errors_and_the_layer_report(tmp_path, capsys):
    from polygraphy.logger import G_LOGGER

    from vlc.targets.trt.pglog import captured

    path = tmp_path / "build.log"
    with captured(G_LOGGER, path) as log:
        G_LOGGER.extra_verbose("Layers:\nName: a, LayerType: gemm")  # TensorRT VERBOSE, as Polygraphy forwards it
        G_LOGGER.warning("w1")
        G_LOGGER.error("e1")
    assert capsys.readouterr().out == ""
    assert log.errors == ["e1"] and log.layers_text.startswith("Layers:\nName: a")
    assert path.read_text().splitlines() == ["[X] Layers:", "Name: a, LayerType: gemm", "[W] w1", "[E] e1"]
    assert not G_LOGGER.use_python_logging_system


def test_parser_errors_from_polygraphys_log():
    from vlc.targets.trt.builder import parser_failures

    logged = ["Could not parse ONNX correctly",
              "In node 3 with name: NonZero_0 and operator: NonZero (importNonZero): UNSUPPORTED_NODE: "
              "Assertion failed: creator && getPluginCreatorVersion(creator) == CreatorVersion::kV3ONE: "
              "NonZero plugin creator version 1 was not found in plugin registry."]
    (failure,) = parser_failures(logged)
    assert (failure.node, failure.name, failure.op, failure.code) == (3, "NonZero_0", "NonZero", "UNSUPPORTED_NODE")
    assert failure.line().startswith("node 3 'NonZero_0' (NonZero): Assertion failed")


def test_summary_without_a_cuda_event_breakdown():
    result = assemble(1, "cuda:0", {"latency": [1.0, 1.1, 0.9]}, include_transfers=True,
                      host_walltime_s=0.003, cuda_graph=False)
    assert result.breakdown == {} and result.latency.count == 3 and not result.warnings
    assert "GPU Compute Time" not in result.extra["trtexec_summary"]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt_rtx is not installed")
def test_polygraphy_binds_one_tensorrt_module_per_process():
    from vlc.errors import TargetUnavailable
    from vlc.targets.trt import pg
    from vlc.targets.trt.backend import TENSORRT_RTX, load_backend

    bound = pg.polygraphy_for(load_backend(TENSORRT_RTX))
    assert pg.bound_module() == "tensorrt_rtx" and bound.trt.loader.trt.__name__ == "tensorrt_rtx"
    assert pg.polygraphy_for(load_backend(TENSORRT_RTX)).trt is bound.trt
    saved = list(pg._bound)
    pg._bound[:] = ["tensorrt"]  # as after a `trt` build in this process
    try:
        with pytest.raises(TargetUnavailable) as info:
            pg.polygraphy_for(load_backend(TENSORRT_RTX))
    finally:
        pg._bound[:] = saved
    line = info.value.line()
    assert "already uses tensorrt" in line and "run the trt-rtx target in a vlc command of its own" in line
