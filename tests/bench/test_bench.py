"""`vlc bench` end to end on a tiny MLP: torch and onnxruntime at fp32 over two batch sizes,
resuming, cells this machine cannot run, deploy bundles, failures, and a report of the results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vlc.artifact import graph_hash
from vlc.cli.app import main
from vlc.errors import TargetUnavailable
from vlc.records import load_records
from vlc.spec import Precision
from vlc.target import Availability, Target

ROOT = Path(__file__).resolve().parents[2]
MLP = f"{ROOT / 'tests' / 'models.py'}:mlp"
MLP_FLOPS_PER_SAMPLE = 2 * (32 * 64 + 64 * 64 + 64 * 10)  # three Linear layers, tests/models.py


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("frontend-cache")  # one export for the whole module


def bench(tmp_path: Path, cache_dir: Path, *args: str, capsys: Any = None) -> tuple[int, dict | None]:
    argv = ["bench", MLP, "--results", str(tmp_path / "results"), "--artifacts", str(tmp_path / "artifacts"),
            "--cache-dir", str(cache_dir), "--warmup", "1", "--iterations", "5", "--machine", "test-box", *args]
    if capsys is not None:
        capsys.readouterr()
        code = main([*argv, "--json"])
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip().startswith("{") else None
    return main(argv), None


def records(tmp_path: Path) -> dict[tuple[str, str, int], Any]:
    return {(r.target, r.precision, r.batch): r for r in load_records([tmp_path / "results"]).records}


def test_sweep_measures_checks_and_resumes(tmp_path, cache_dir, capsys):
    code, summary = bench(tmp_path, cache_dir, "--targets", "torch,onnxruntime", "--precisions", "fp32",
                          "--batch", "1,3", capsys=capsys)
    assert code == 0 and summary is not None
    assert summary["skipped"] == 0 and len(summary["written"]) == 4
    found = records(tmp_path)
    assert set(found) == {(t, "fp32", b) for t in ("torch", "onnxruntime") for b in (1, 3)}
    hashes = {r.source_hash for r in found.values()}
    assert len(hashes) == 1
    cached = next(cache_dir.rglob("model.onnx"))
    assert hashes == {graph_hash(cached)}
    for (target, _, batch), r in found.items():
        assert r.status == "ok" and r.model == "mlp" and r.machine == "test-box" and r.device == "cpu"
        assert r.latency_ms["count"] == 5 and r.latency_ms["median"] > 0
        assert r.throughput_per_s == pytest.approx(batch * 1000 / r.latency_ms["median"])
        assert r.accuracy is not None and r.accuracy.passed and r.accuracy.reference == "torch"
        assert r.accuracy.max_abs is not None and r.accuracy.max_abs < 1e-4
        assert r.flops_per_sample == MLP_FLOPS_PER_SAMPLE
        assert r.achieved_tflops == pytest.approx(MLP_FLOPS_PER_SAMPLE * r.throughput_per_s / 1e12)
        assert r.environment["host"] and r.environment["cpu"]["model"] and r.environment["vlc_version"]
        assert r.settings["iterations"] == 5 and r.settings["warmup"] == 1
        assert Path(r.artifact["path"], "manifest.json").is_file()
    files = sorted((tmp_path / "results").rglob("*.result.json"))
    stamps = {p: p.stat().st_mtime_ns for p in files}

    code, again = bench(tmp_path, cache_dir, "--targets", "torch,onnxruntime", "--precisions", "fp32",
                        "--batch", "1,3", capsys=capsys)
    assert code == 0 and again is not None
    assert again["skipped"] == 4 and again["written"] == []  # every finished cell was skipped
    assert {p: p.stat().st_mtime_ns for p in files} == stamps

    # a new batch size only measures the new cells
    code, more = bench(tmp_path, cache_dir, "--targets", "onnxruntime", "--precisions", "fp32",
                       "--batch", "1,3,4", capsys=capsys)
    assert code == 0 and more is not None and more["skipped"] == 2
    assert [c["batch"] for c in more["cells"] if not c["skipped"]] == [4]

    # and the results make a report
    out = tmp_path / "report.md"
    assert main(["report", str(tmp_path / "results"), "-o", str(out), "--no-plots"]) == 0
    text = out.read_text()
    assert "| batch | torch / fp32 /" in text and "## Model: mlp" in text


class Unavailable(Target):
    name = "fake-accel"
    precisions = (Precision.FP32, Precision.FP16)
    devices = ("cuda",)

    def available(self) -> Availability:
        return Availability(False, "the fake-accel SDK is not installed (test target)")


class Bundler(Unavailable):
    name = "fake-bundler"

    def emit_bundle(self, source: Any, spec: Any, out_dir: Path) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "bundle.json").write_text(json.dumps({"precision": spec.precision.value,
                                                         "batch": spec.batch, "onnx": str(source.onnx_path)}))
        return out_dir


class Broken(Target):
    name = "fake-broken"
    devices = ("cpu",)

    def available(self) -> Availability:
        return Availability(True, devices=["cpu"])

    def _compile(self, source, spec, build) -> None:
        raise RuntimeError("backend exploded")


class NeedsHardware(Broken):
    name = "fake-needs-hw"

    def _compile(self, source, spec, build) -> None:
        raise TargetUnavailable("no fake NPU is attached", fix="run on a machine with one")


class BuildsElsewhere(NeedsHardware):
    """Runs here, but its compiler is missing (like ais_bench without atc)."""

    name = "fake-builds-elsewhere"
    emit_bundle = Bundler.emit_bundle


@pytest.fixture
def fake_targets(monkeypatch):
    import vlc.plugin_manager as pm

    fakes = {t.name: t for t in (Unavailable(), Bundler(), Broken(), NeedsHardware(), BuildsElsewhere())}
    real = pm.get_target
    monkeypatch.setattr(pm, "get_target", lambda name: fakes[name] if name in fakes else real(name))
    return fakes


def test_cells_this_machine_cannot_run_are_recorded_with_the_reason(tmp_path, cache_dir, fake_targets):
    code, _ = bench(tmp_path, cache_dir, "--targets", "onnxruntime,fake-accel,fake-needs-hw",
                    "--precisions", "fp32,bf16", "--batch", "1,2")
    assert code == 0
    found = records(tmp_path)
    assert len(found) == 12
    for b in (1, 2):
        assert found[("onnxruntime", "fp32", b)].status == "ok"
        ort_bf16 = found[("onnxruntime", "bf16", b)]
        assert ort_bf16.status == "unavailable" and "does not support precision bf16" in ort_bf16.reason
        fake = found[("fake-accel", "fp32", b)]
        assert fake.status == "unavailable" and "fake-accel SDK is not installed" in fake.reason
        assert fake.device == "cuda" and fake.latency_ms is None
        assert "does not support precision bf16" in found[("fake-accel", "bf16", b)].reason
        assert found[("fake-needs-hw", "fp32", b)].status == "unavailable"
        assert "no fake NPU is attached" in found[("fake-needs-hw", "fp32", b)].reason


def test_emit_writes_bundles_instead_of_measuring(tmp_path, cache_dir, fake_targets, capsys):
    args = ("--targets", "onnxruntime,fake-bundler", "--precisions", "fp32,fp16", "--batch", "1,2",
            "--emit", str(tmp_path / "bundles"))
    code, summary = bench(tmp_path, cache_dir, *args, capsys=capsys)
    assert code == 0 and summary is not None
    found = records(tmp_path)
    for precision in ("fp32", "fp16"):
        for b in (1, 2):
            r = found[("fake-bundler", precision, b)]
            assert r.status == "emitted" and r.bundle == str(tmp_path / "bundles" / "mlp" / f"fake-bundler-{precision}")
            assert "deploy bundle" in r.device_name
        meta = json.loads(Path(found[("fake-bundler", precision, 1)].bundle, "bundle.json").read_text())
        assert meta["precision"] == precision and meta["batch"] == [1, 2, 2]
    assert found[("onnxruntime", "fp32", 1)].status == "ok"  # available targets are still measured
    code, again = bench(tmp_path, cache_dir, *args, capsys=capsys)
    assert code == 0 and again is not None
    skipped = {(c["target"], c["precision"]) for c in again["cells"] if c["skipped"]}
    assert ("fake-bundler", "fp16") in skipped and ("onnxruntime", "fp32") in skipped


def test_emit_covers_targets_that_run_here_but_cannot_build_here(tmp_path, cache_dir, fake_targets):
    code, _ = bench(tmp_path, cache_dir, "--targets", "fake-builds-elsewhere,fake-needs-hw", "--batch", "1",
                    "--emit", str(tmp_path / "bundles"))
    assert code == 0
    found = records(tmp_path)
    bundled = found[("fake-builds-elsewhere", "fp32", 1)]
    assert bundled.status == "emitted" and Path(bundled.bundle, "bundle.json").is_file()
    cell = json.loads(Path(bundled.bundle, "vlc-bench.json").read_text())
    assert cell["target"] == "fake-builds-elsewhere" and cell["machine"] == "test-box" and cell["batches"] == [1]
    assert found[("fake-needs-hw", "fp32", 1)].status == "unavailable"  # no emit_bundle: nothing to write


def test_a_failing_cell_is_recorded_and_the_exit_status_says_so(tmp_path, cache_dir, fake_targets, capsys):
    code, _ = bench(tmp_path, cache_dir, "--targets", "fake-broken,onnxruntime", "--precisions", "fp32",
                    "--batch", "1")
    assert code == 1
    assert "1 of 2 cell(s) failed" in capsys.readouterr().err
    found = records(tmp_path)
    assert found[("fake-broken", "fp32", 1)].status == "failed"
    assert "backend exploded" in found[("fake-broken", "fp32", 1)].reason
    assert found[("onnxruntime", "fp32", 1)].status == "ok"


@pytest.mark.parametrize("args, message", [
    (("--targets", "nope"), "unknown target 'nope'"),
    (("--precisions", "fp64"), "unknown precision 'fp64'"),
    (("--batch", "0"), "positive"),
    (("--iterations", "5", "--duration", "1"), "exclusive"),
    (("--emit-targets", "torch"), "needs --emit"),
    (("--targets", "torch:mode"), "cannot read option 'mode' of --targets entry 'torch:mode'"),
    (("--targets", "torch:mode=eager", "--emit", "b", "--emit-targets", "onnxruntime"), "which --targets does not"),
    (("--graph", "simplified"), "unknown --graph 'simplified'"),
])
def test_user_errors_come_before_any_work(tmp_path, cache_dir, capsys, args, message):
    argv = ["bench", MLP, "--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "no-cache"), *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "no-cache").exists() and not (tmp_path / "r").exists()


def test_target_variants_are_separate_cells_and_columns(tmp_path, cache_dir, capsys):
    entries = "torch,torch:mode=eager,onnxruntime:graph_optimization_level=disable,onnxruntime:no_such_option=1"
    code, summary = bench(tmp_path, cache_dir, "--targets", entries, "--batch", "2", capsys=capsys)
    assert code == 0 and summary is not None
    found = records(tmp_path)
    assert set(found) == {(t, "fp32", 2) for t in entries.split(",")}
    plain, eager = found[("torch", "fp32", 2)], found[("torch:mode=eager", "fp32", 2)]
    assert plain.status == eager.status == "ok" and eager.accuracy.passed
    assert eager.settings["target_options"] == {"mode": "eager"} and "target_options" not in plain.settings
    assert eager.artifact["spec"]["options"] == {"mode": "eager"}
    assert Path(eager.artifact["path"]) != Path(plain.artifact["path"])
    ort = found[("onnxruntime:graph_optimization_level=disable", "fp32", 2)]
    assert ort.status == "ok" and ort.artifact["spec"]["options"] == {"graph_optimization_level": "disable"}
    assert Path(ort.artifact["path"]).name == "onnxruntime_graph_optimization_level_disable-fp32-cpu"
    unknown = found[("onnxruntime:no_such_option=1", "fp32", 2)]
    assert unknown.status == "unavailable"
    assert "unknown option(s) no_such_option for target 'onnxruntime'" in unknown.reason
    assert len(list((tmp_path / "results").rglob("*.result.json"))) == 4

    # resume goes by label: the measured variants are skipped, the unavailable one is retried
    code, again = bench(tmp_path, cache_dir, "--targets", entries, "--batch", "2", capsys=capsys)
    assert code == 0 and again is not None and again["skipped"] == 3
    assert [c["target"] for c in again["cells"] if not c["skipped"]] == ["onnxruntime:no_such_option=1"]

    out = tmp_path / "report.md"
    assert main(["report", str(tmp_path / "results"), "-o", str(out), "--no-plots"]) == 0
    text = out.read_text()
    assert "| torch / fp32 /" in text and "| torch:mode=eager / fp32 /" in text


def test_raw_graph_cells_are_labelled_and_measured_on_the_exporter_output(tmp_path, cache_dir, capsys):
    from vlc.frontend.pipeline import prepare

    code, summary = bench(tmp_path, cache_dir, "--targets", "onnxruntime,torch", "--batch", "2",
                          "--graph", "raw", capsys=capsys)
    assert code == 0 and summary is not None
    found = records(tmp_path)
    assert set(found) == {("onnxruntime@raw", "fp32", 2), ("torch@raw", "fp32", 2)}
    raw_dirs = [p.parent for p in cache_dir.rglob("frontend.json")
                if json.loads(p.read_text())["options"]["simplify"] is False]
    assert len(raw_dirs) == 1
    frontend = json.loads((raw_dirs[0] / "frontend.json").read_text())
    assert frontend["options"]["passes"] == [] and [s["name"] for s in frontend["stages"]] == ["export"]
    for r in found.values():
        assert r.status == "ok" and r.accuracy.passed and r.settings["graph"] == "raw"
        assert r.source_hash == graph_hash(raw_dirs[0] / "model.onnx")
        assert r.flops_per_sample == MLP_FLOPS_PER_SAMPLE
    normalized = prepare(MLP, cache_dir)
    assert graph_hash(normalized.onnx_path) != graph_hash(raw_dirs[0] / "model.onnx")


def test_target_entries_keep_bracketed_values_whole():
    from vlc.bench.variants import parse_entry, split_entries

    entries = split_entries('torch, onnxruntime:providers=["cuda","cpu"]:intra_op_threads=2 ,torch,')
    assert entries == ["torch", 'onnxruntime:providers=["cuda","cpu"]:intra_op_threads=2']
    assert parse_entry(entries[1]) == ("onnxruntime", {"providers": ["cuda", "cpu"], "intra_op_threads": 2},
                                       'onnxruntime:providers=["cuda","cpu"]:intra_op_threads=2')
    assert parse_entry("torch : mode = eager")[2] == "torch:mode=eager"
