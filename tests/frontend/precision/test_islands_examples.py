"""islands=auto on the reference workloads (test sizes): fewer fp32 nodes than the static islands,
cosine >= 0.999 against fp32 on the models' own inputs, and the choice in the artifact's manifest."""

from __future__ import annotations

import json

import pytest

from tests.conftest import model_ref
from vlc.frontend.pipeline import prepare
from vlc.frontend.precision import convert, model_inputs

# a reference workload at its test size and the tests' tiny transformer (both exported by other
# tests of a run too, so the front end's cache serves them)
EXAMPLES = ("clip-vit-b32-image@test", model_ref("transformer"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_auto_islands_are_fewer_than_static_and_meet_the_goal(tmp_path, name):
    source = prepare(name)
    inputs = model_inputs(source, "fp16")
    static = convert(source.onnx_path, "fp16", tmp_path / "static.onnx", input_specs=source.input_specs, **inputs)
    auto = convert(source.onnx_path, "fp16", tmp_path / "auto.onnx", input_specs=source.input_specs,
                   islands="auto", **inputs)
    record = auto.islands
    static_nodes = sum(static.fp32_ops.values())
    assert static_nodes > 0 and record["static"]["fp32_nodes"] == static_nodes
    assert record["chosen"]["fp32_nodes"] < static_nodes
    assert sum(auto.fp32_ops.values()) == record["chosen"]["fp32_nodes"]
    assert auto.passed and min(o.cosine for o in auto.accuracy.outputs) >= 0.999
    assert min(o.ref_std for o in auto.accuracy.outputs) > 1e-3  # outputs with real spread
    assert record["chosen"]["numbers"]["min_cosine"] >= 0.999
    assert record["inputs"] == inputs["check_note"]  # the model's own generator
    assert record["search"]["evaluations"] <= record["search"]["max_evaluations"]


def test_onnxruntime_cpu_build_with_auto_islands(vlc_cli, tmp_path):
    out = tmp_path / "clip-auto"
    code, stdout, stderr = vlc_cli("compile", EXAMPLES[0], "-t", "onnxruntime", "-p", "fp16",
                                   "-O", "islands=auto", "-O", "accuracy=0.999", "-o", out)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    precision = manifest["extra"]["precision"]
    record = precision["islands"]
    assert record["goal"]["min_cosine"] == 0.999
    assert record["chosen"]["fp32_nodes"] < record["static"]["fp32_nodes"]
    assert precision["passed"] and precision["accuracy"]["tolerance"]["min_cosine"] == 0.999
    assert "islands=auto kept" in (out / "build.log").read_text()
    # the artifact runs and matches the fp32 graph within fp16's tolerance
    code, stdout, stderr = vlc_cli("compare", out, "--reference", "onnx", "--json")
    assert code == 0, stderr
    compared = json.loads(stdout)
    assert compared["passed"] and all(o["cosine"] >= 0.999 for o in compared["outputs"])


def test_bad_islands_option_is_one_line(vlc_cli, tmp_path):
    code, _, stderr = vlc_cli("compile", EXAMPLES[0], "-t", "onnxruntime", "-p", "fp16",
                              "-O", "accuracy=2", "-o", tmp_path / "x")
    assert code != 0 and "accuracy=2" in stderr and "Traceback" not in stderr


def test_trt_rtx_build_with_auto_islands(vlc_cli, tmp_path):
    """TensorRT-RTX builds ahead of time without a GPU: the engine is parsed from the auto graph."""
    from vlc.plugin_manager import get_target

    if not get_target("trt-rtx").available().ok:
        pytest.skip("TensorRT-RTX is not installed")
    out = tmp_path / "rtx"
    code, _, stderr = vlc_cli("compile", EXAMPLES[0], "-t", "trt-rtx", "-p", "fp16", "--preset", "rtx4090",
                              "-O", "islands=auto", "-o", out)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    precision = manifest["extra"]["precision"]
    assert precision["passed"]
    assert precision["islands"]["chosen"]["fp32_nodes"] < precision["islands"]["static"]["fp32_nodes"]
    assert manifest["files"]["graph"].startswith("model.fp16")  # the engine was parsed from the converted graph
