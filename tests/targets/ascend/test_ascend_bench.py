"""`vlc bench --emit` writes real Ascend bundles on a machine without the toolkit; their scripts
run against the STAND-IN atc and ais_bench (tests/standins), `vlc ascend import --results`
turns their outputs into bench records, and `vlc report` merges them with the bench's own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from standin_env import standin_path

from vlc.cli.app import main
from vlc.records import RecordError, load_records, validate

ROOT = Path(__file__).resolve().parents[3]
MLP = f"{ROOT / 'tests' / 'models.py'}:mlp"
MLP_FLOPS_PER_SAMPLE = 2 * (32 * 64 + 64 * 64 + 64 * 10)  # three Linear layers, tests/models.py


def run_scripts(bundle: Path, standins: Path) -> None:
    # the scripts' python3 must be one with onnxruntime: this interpreter's
    env = {**os.environ, "PATH": standin_path(), "VLC_AIS_BENCH": str(standins / "ais_bench_cli")}
    for script in ("compile.sh", "run.sh", "profile.sh"):
        proc = subprocess.run(["bash", str(bundle / script)], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_bench_emit_scripts_import_report(tmp_path, no_toolkit, capsys):
    results, bundles = tmp_path / "results", tmp_path / "bundles"
    code = main(["bench", MLP, "--targets", "ascend310p", "--precisions", "fp16", "--batch", "1,2,4",
                 "--emit", str(bundles), "--results", str(results), "--artifacts", str(tmp_path / "art"),
                 "--cache-dir", str(tmp_path / "cache"), "--machine", "build-box"])
    assert code == 0, capsys.readouterr().err
    emitted = {r.batch: r for r in load_records([results]).records}
    assert sorted(emitted) == [1, 2, 4] and {r.status for r in emitted.values()} == {"emitted"}
    bundle = Path(emitted[1].bundle)
    assert bundle == bundles / "mlp" / "ascend310p-fp16"
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["model"] == "mlp" and meta["soc_version"] == "Ascend310P3"
    assert [b["batches"] for b in meta["builds"]] == [[1], [2], [4]]  # every benched batch is built
    assert " --soc_version=Ascend310P3 " in (bundle / "compile.sh").read_text()

    standins = ROOT / "tests" / "standins"
    run_scripts(bundle, standins)
    capsys.readouterr()
    assert main(["ascend", "import", str(bundle), "--results", str(results), "--machine", "npu-box"]) == 0
    assert "wrote 3 record(s)" in capsys.readouterr().err
    merged = {(r.machine, r.batch): r for r in load_records([results]).records}
    assert len(merged) == 6
    for batch in (1, 2, 4):
        r = merged[("npu-box", batch)]
        assert r.status == "ok" and r.model == "mlp" and r.target == "ascend310p" and r.precision == "fp16"
        assert r.device == "npu" and r.device_name == "Ascend 310P3"
        assert r.source_hash == emitted[batch].source_hash
        assert r.accuracy is not None and r.accuracy.passed and r.accuracy.reference == "onnxruntime-fp32"
        assert r.latency_ms["count"] == 100 and r.includes_transfers is False
        assert "imported from the Ascend bundle" in r.settings["timing_source"]
        assert r.flops_per_sample == MLP_FLOPS_PER_SAMPLE
        assert r.peak_tflops == 70 and r.utilisation == pytest.approx(r.achieved_tflops / 70)
        assert r.environment["npus"] == [{"name": "Ascend 310P3"}]

    # without --machine, the host name profile.sh recorded names the machine
    other = tmp_path / "other"
    assert main(["ascend", "import", str(bundle), "--results", str(other)]) == 0
    assert {r.machine for r in load_records([other]).records} == {os.uname().nodename}

    out = tmp_path / "report.md"
    assert main(["report", str(results), "-o", str(out), "--no-plots"]) == 0
    text = out.read_text()
    assert "ascend310p / fp16 / Ascend 310P3" in text and "deploy bundle" in text


def test_import_without_timings_writes_nothing(tmp_path, no_toolkit, capsys):
    from vlc.frontend.pipeline import prepare
    from vlc.plugin_manager import get_target
    from vlc.spec import Precision, TargetSpec

    source = prepare(MLP, tmp_path / "cache")
    bundle = get_target("ascend310p").emit_bundle(source, TargetSpec("ascend310p", Precision.FP16,
                                                                     batch=(2, 2, 2)), tmp_path / "b")
    assert (bundle / "compile.sh").is_file()
    capsys.readouterr()
    assert main(["ascend", "import", str(bundle), "--results", str(tmp_path / "r"), "--machine", "x"]) == 2
    assert "has no timings to record" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_records_accept_timers_without_p90():
    # ais_bench's console summary has min/max/mean/median/p99 only
    latency = {"count": 0, "min": 1.0, "max": 2.0, "mean": 1.5, "median": 1.4, "p90": None, "p95": None,
               "p99": 1.9, "std": None}
    record = {"schema": "vlc.bench.result", "schema_version": 1, "model": "m", "target": "ascend310p",
              "precision": "fp16", "batch": 1, "machine": "npu-box", "status": "ok", "source_hash": "h",
              "latency_ms": latency, "throughput_per_s": 700.0}
    validate(record, "record")
    with pytest.raises(RecordError, match="latency_ms.p99"):
        validate({**record, "latency_ms": {**latency, "p99": None}}, "record")
