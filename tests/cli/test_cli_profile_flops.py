"""`vlc profile` records carry FLOPs per sample and utilisation as `vlc bench` records do."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import model_ref
from vlc import plugin_manager
from vlc.records import read_record
from vlc.spec import TargetSpec

MLP_FLOPS_PER_SAMPLE = 2 * (32 * 64 + 64 * 64 + 64 * 10)  # three Linear layers, tests/models.py


def test_profile_records_count_flops_and_say_when_they_cannot(vlc_cli, tmp_path):
    from vlc.frontend.pipeline import FrontendOptions, prepare

    # a private copy of the source graph, so removing it later leaves the shared cache alone
    source = prepare(model_ref("mlp"), tmp_path / "cache", FrontendOptions(parity=False))
    art = tmp_path / "art"
    plugin_manager.get_target("onnxruntime").compile(source, TargetSpec("onnxruntime", batch=(1, 4, 8)), art)

    code, stdout, stderr = vlc_cli("profile", art, "--batch", "1,8", "-n", "3", "--warmup", "1",
                                   "--record", tmp_path / "results")
    assert code == 0, stderr
    files = sorted((tmp_path / "results").rglob("*.result.json"))
    assert len(files) == 2
    for path in files:
        record = read_record(path)
        assert record.flops_per_sample == MLP_FLOPS_PER_SAMPLE
        assert record.achieved_tflops == pytest.approx(MLP_FLOPS_PER_SAMPLE * record.throughput_per_s / 1e12)
        assert record.peak_source  # the CPU estimate, or why the peak is unknown
        if record.peak_tflops:
            assert record.utilisation == pytest.approx(record.achieved_tflops / record.peak_tflops)
        assert record.settings["command"] == "vlc profile" and record.latency_ms["count"] == 3

    # the artifact carries its source graph: the front-end cache may go
    shutil.rmtree(tmp_path / "cache")
    code, stdout, stderr = vlc_cli("profile", art, "--batch", "2", "-n", "2", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)[0]["flops_per_sample"] == MLP_FLOPS_PER_SAMPLE

    # the artifact runs without a source graph; the record then says FLOPs are unknown
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["source"]["onnx"] = "no-such-graph.onnx"
    (art / "manifest.json").write_text(json.dumps(manifest))
    code, stdout, stderr = vlc_cli("profile", art, "--batch", "2", "-n", "2", "--json")
    assert code == 0, stderr
    (record,) = json.loads(stdout)
    assert record["flops_per_sample"] is None and record["utilisation"] is None
    assert "FLOPs could not be counted from the ONNX graph" in record["warnings"]


def test_profile_per_layer_prints_and_records_the_operator_profile(vlc_cli, tmp_path):
    art = tmp_path / "cnn"
    code, o, e = vlc_cli("compile", model_ref("cnn"), "--target", "onnxruntime", "-o", art)
    assert code == 0, o + e
    code, o, e = vlc_cli("profile", art, "--per-layer", "-n", "5", "--warmup", "1", "--record", tmp_path / "r.json")
    assert code == 0, o + e
    assert "operator types by time (ONNX Runtime's profiler" in o and "Conv" in o
    (record,) = json.loads((tmp_path / "r.json").read_text())
    operators = record["settings"]["extra"]["per_operator"]["operators"]
    assert {row["op"] for row in operators} >= {"Conv"} and abs(sum(r["share"] for r in operators) - 1) < 1e-6
    code, o, e = vlc_cli("profile", art, "--cuda-graphs", "-n", "3", "--warmup", "1")
    assert code == 0 and "did not replay a CUDA graph" in e  # said, not silently ignored
