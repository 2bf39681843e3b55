"""`vlc bench` end to end on a tiny MLP: torch and onnxruntime at fp32 over two batch sizes,
resuming (only when every setting is unchanged), cells this machine cannot run, deploy bundles
(the real Ascend target with the STAND-IN ais_bench of tests/standins), failures, failed
accuracy, one session per cell, and a report of the results."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import registered_plugin
from vlc import plugin_manager
from vlc.artifact import graph_hash
from vlc.cli.app import main
from vlc.errors import TargetUnavailable
from vlc.hookspecs import hookimpl
from vlc.records import load_records
from vlc.target import Availability, Target
from vlc.targets.onnxruntime.target import OnnxRuntimeTarget

ROOT = Path(__file__).resolve().parents[2]
MLP = f"{ROOT / 'tests' / 'models.py'}:mlp"
STANDINS = ROOT / "tests" / "standins"
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
    for (_target, _, batch), r in found.items():
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


class Broken(Target):
    """A backend whose compiler raises: the control flow of a crashing build."""

    name = "test-broken"
    summary = "a target whose compiler raises"

    def available(self) -> Availability:
        return Availability(True, devices=["cpu"])

    def _compile(self, source, spec, build) -> None:
        raise RuntimeError("backend exploded")


class NeedsHardware(Broken):
    name = "test-needs-hw"
    summary = "a target that says at compile time that it cannot build here"

    def _compile(self, source, spec, build) -> None:
        raise TargetUnavailable("no NPU of this kind is attached", fix="run on a machine with one")


class CountingOrt(OnnxRuntimeTarget):
    """The real onnxruntime target, counting how often an artifact is opened."""

    name = "test-counting-ort"

    def __init__(self) -> None:
        self.opens = 0

    def _open(self, artifact):
        self.opens += 1
        return super()._open(artifact)


class MiscompilingOrt(OnnxRuntimeTarget):
    """The real onnxruntime target writing a wrong graph (its first weight negated): a build that
    runs fine and computes the wrong numbers."""

    name = "test-miscompiling-ort"

    def _compile(self, source, spec, build) -> None:
        import onnx
        from onnx import numpy_helper

        super()._compile(source, spec, build)
        main = build.path / build.files["main"]
        model = onnx.load(str(main))
        weight = next(t for t in model.graph.initializer if len(t.dims) == 2)
        weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
        onnx.save(model, str(main))


class TestTargets:
    @hookimpl
    def register_targets(self, register) -> None:
        for target in (Broken(), NeedsHardware(), CountingOrt(), MiscompilingOrt()):
            register(target)


@pytest.fixture
def test_targets():
    """Targets registered through the plugin hook, as a third-party package would."""
    with registered_plugin(TestTargets(), "test-bench-targets"):
        yield {name: plugin_manager.get_target(name) for name in
               ("test-broken", "test-needs-hw", "test-counting-ort", "test-miscompiling-ort")}


def _forget_ais_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in [m for m in sys.modules if m == "ais_bench" or m.startswith("ais_bench.")]:
        monkeypatch.delitem(sys.modules, module)
    for name in ("VLC_AIS_BENCH", "VLC_ATC", "ASCEND_TOOLKIT_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_ascend_toolkit(monkeypatch):
    """Neither atc nor ais_bench: the real Ascend targets cannot run here, but can write bundles."""
    _forget_ais_bench(monkeypatch)
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]))


@pytest.fixture
def ascend_runner_only(monkeypatch):
    """The STAND-IN ais_bench but no atc: ascend310p runs here but cannot build here."""
    _forget_ais_bench(monkeypatch)
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]))
    monkeypatch.setenv("VLC_AIS_BENCH", str(STANDINS / "ais_bench_cli"))
    monkeypatch.setenv("STANDIN_CANN", "8")


def test_cells_this_machine_cannot_run_are_recorded_with_the_reason(tmp_path, cache_dir, test_targets,
                                                                     no_ascend_toolkit):
    code, _ = bench(tmp_path, cache_dir, "--targets", "onnxruntime,ascend310p,test-needs-hw",
                    "--precisions", "fp32,bf16", "--batch", "1,2")
    assert code == 0
    found = records(tmp_path)
    assert len(found) == 12
    for b in (1, 2):
        assert found[("onnxruntime", "fp32", b)].status == "ok"
        ort_bf16 = found[("onnxruntime", "bf16", b)]
        assert ort_bf16.status == "unavailable" and "does not support precision bf16" in ort_bf16.reason
        ascend = found[("ascend310p", "fp32", b)]
        assert ascend.status == "unavailable" and "ais_bench not found" in ascend.reason
        assert ascend.device == "npu" and ascend.latency_ms is None
        assert "does not support precision bf16" in found[("ascend310p", "bf16", b)].reason
        assert found[("test-needs-hw", "fp32", b)].status == "unavailable"
        assert "no NPU of this kind is attached" in found[("test-needs-hw", "fp32", b)].reason


def test_emit_writes_bundles_instead_of_measuring(tmp_path, cache_dir, no_ascend_toolkit, capsys):
    args = ("--targets", "onnxruntime,ascend310p", "--precisions", "fp32,fp16", "--batch", "1,2",
            "--emit", str(tmp_path / "bundles"))
    code, summary = bench(tmp_path, cache_dir, *args, capsys=capsys)
    assert code == 0 and summary is not None
    found = records(tmp_path)
    for precision in ("fp32", "fp16"):
        for b in (1, 2):
            r = found[("ascend310p", precision, b)]
            assert r.status == "emitted" and r.bundle == str(tmp_path / "bundles" / "mlp" / f"ascend310p-{precision}")
            assert "deploy bundle" in r.device_name
        meta = json.loads(Path(found[("ascend310p", precision, 1)].bundle, "bundle.json").read_text())
        assert meta["precision"] == precision and [b["batches"] for b in meta["builds"]] == [[1], [2]]
    assert found[("onnxruntime", "fp32", 1)].status == "ok"  # available targets are still measured
    code, again = bench(tmp_path, cache_dir, *args, capsys=capsys)
    assert code == 0 and again is not None
    skipped = {(c["target"], c["precision"]) for c in again["cells"] if c["skipped"]}
    assert ("ascend310p", "fp16") in skipped and ("onnxruntime", "fp32") in skipped


def test_emit_covers_targets_that_run_here_but_cannot_build_here(tmp_path, cache_dir, test_targets,
                                                                 ascend_runner_only):
    code, _ = bench(tmp_path, cache_dir, "--targets", "ascend310p,test-needs-hw", "--precisions", "fp16",
                    "--batch", "1", "--emit", str(tmp_path / "bundles"))
    assert code == 0
    found = records(tmp_path)
    bundled = found[("ascend310p", "fp16", 1)]
    assert bundled.status == "emitted" and Path(bundled.bundle, "bundle.json").is_file()
    cell = json.loads(Path(bundled.bundle, "vlc-bench.json").read_text())
    assert cell["target"] == "ascend310p" and cell["machine"] == "test-box" and cell["batches"] == [1]
    assert found[("test-needs-hw", "fp16", 1)].status == "unavailable"  # no emit_bundle: nothing to write


def test_a_failing_cell_is_recorded_and_the_exit_status_says_so(tmp_path, cache_dir, test_targets, capsys):
    code, _ = bench(tmp_path, cache_dir, "--targets", "test-broken,onnxruntime", "--precisions", "fp32",
                    "--batch", "1")
    assert code == 1
    assert "1 of 2 cell(s) failed" in capsys.readouterr().err
    found = records(tmp_path)
    assert found[("test-broken", "fp32", 1)].status == "failed"
    assert "backend exploded" in found[("test-broken", "fp32", 1)].reason
    assert found[("onnxruntime", "fp32", 1)].status == "ok"


def test_a_cell_that_computes_wrong_numbers_is_recorded_as_failing_accuracy(tmp_path, cache_dir, test_targets):
    code, _ = bench(tmp_path, cache_dir, "--targets", "test-miscompiling-ort,onnxruntime", "--batch", "2")
    found = records(tmp_path)
    wrong, right = found[("test-miscompiling-ort", "fp32", 2)], found[("onnxruntime", "fp32", 2)]
    assert wrong.status == "ok" and wrong.latency_ms is not None  # it ran and was timed
    assert wrong.accuracy is not None and wrong.accuracy.passed is False
    assert wrong.accuracy.cosine < 0.99 and wrong.accuracy.outputs[0]["passed"] is False
    assert right.accuracy is not None and right.accuracy.passed is True
    out = tmp_path / "report.md"
    assert main(["report", str(tmp_path / "results"), "-o", str(out), "--no-plots"]) == 0
    assert "FAIL" in out.read_text()


def test_each_cell_opens_its_artifact_once(tmp_path, cache_dir, test_targets):
    counting = test_targets["test-counting-ort"]
    code, _ = bench(tmp_path, cache_dir, "--targets", "test-counting-ort", "--batch", "1,3")
    assert code == 0
    found = records(tmp_path)
    assert {r.status for r in found.values()} == {"ok"} and len(found) == 2
    assert counting.opens == 2  # the accuracy run and the timing of a cell share one session


def test_resume_measures_again_when_a_setting_changed(tmp_path, cache_dir, capsys):
    base = ("--targets", "onnxruntime", "--batch", "1,2")
    assert bench(tmp_path, cache_dir, *base)[0] == 0
    first = records(tmp_path)
    capsys.readouterr()

    # more iterations: every cell is measured again, and the log says why
    code = main(["bench", MLP, "--results", str(tmp_path / "results"), "--artifacts", str(tmp_path / "artifacts"),
                 "--cache-dir", str(cache_dir), "--warmup", "1", "--iterations", "7", "--machine", "test-box",
                 *base])
    err = capsys.readouterr().err
    assert code == 0
    assert "settings changed (iterations 5 -> 7): measured again" in err, err
    again = records(tmp_path)
    assert {r.latency_ms["count"] for r in again.values()} == {7}
    assert all(again[k].created >= first[k].created for k in first)

    # the same settings again: skipped (the last --iterations wins over the helper's 5)
    code, summary = bench(tmp_path, cache_dir, "--iterations", "7", *base, capsys=capsys)
    assert code == 0 and summary is not None and summary["skipped"] == 2

    # warm-up, transfers and seed are part of the key too
    for extra, change in ((("--warmup", "2"), "warm-up 1 -> 2"), (("--no-transfers",), "transfers true -> false"),
                          (("--seed", "3"), "seed 0 -> 3")):
        capsys.readouterr()
        argv = ["bench", MLP, "--results", str(tmp_path / "results"), "--artifacts", str(tmp_path / "artifacts"),
                "--cache-dir", str(cache_dir), "--warmup", "1", "--iterations", "7", "--machine", "test-box",
                *base, *extra]
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert f"{change}" in err and "measured again" in err, (extra, err)


MODEL_FILE = """
import torch


def model():
    torch.manual_seed({seed})
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    return net, torch.randn(2, 8)
"""


def test_resume_measures_again_when_the_model_changed(tmp_path, capsys):
    """A record of another graph of the same model (new weights, new code) is never kept."""
    model_file = tmp_path / "net.py"
    model_file.write_text(MODEL_FILE.format(seed=1))
    argv = ["bench", f"{model_file}:model", "--targets", "onnxruntime", "--batch", "2", "--results",
            str(tmp_path / "results"), "--artifacts", str(tmp_path / "artifacts"), "--cache-dir",
            str(tmp_path / "cache"), "--warmup", "1", "--iterations", "3", "--machine", "test-box"]
    assert main(argv) == 0
    (before,) = load_records([tmp_path / "results"]).records
    capsys.readouterr()

    model_file.write_text(MODEL_FILE.format(seed=12345))  # other weights (and file size): another graph
    assert main(argv) == 0
    err = capsys.readouterr().err
    (after,) = load_records([tmp_path / "results"]).records
    assert after.source_hash != before.source_hash
    assert f"model hash {before.source_hash[:12]} -> {after.source_hash[:12]}" in err, err
    assert after.accuracy is not None and after.accuracy.passed


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
    assert eager.artifact["spec"]["options"] == {"mode": "eager"}  # every option, typed: torch has one
    assert Path(eager.artifact["path"]) != Path(plain.artifact["path"])
    ort = found[("onnxruntime:graph_optimization_level=disable", "fp32", 2)]
    assert ort.status == "ok" and ort.artifact["spec"]["options"]["graph_optimization_level"] == "disable"
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


def test_the_model_size_is_part_of_its_name_in_records_and_paths(tmp_path, monkeypatch, capsys):
    from vlc import examples
    from vlc.records import record_path

    assert examples.load("mobilevit-s").name == "mobilevit-s"
    assert examples.load("mobilevit-s", size="test").name == "mobilevit-s@test"

    model = "clip-vit-b32-text@test"
    code = main(["bench", model, "--targets", "onnxruntime", "--batch", "1", "--results", str(tmp_path / "results"),
                 "--artifacts", str(tmp_path / "artifacts"), "--cache-dir", str(tmp_path / "cache"),
                 "--warmup", "1", "--iterations", "2", "--machine", "test-box"])
    (record,) = load_records([tmp_path / "results"]).records
    assert code == 0 and record.status == "ok", record.reason
    assert record.model == model
    assert record_path(tmp_path / "results", record).parent.name == model
    assert Path(record.artifact["path"]).parent.name.startswith(f"{model}-")
    full = record_path(tmp_path / "results", type(record)(**{**record.__dict__, "model": "clip-vit-b32-text"}))
    assert full != record_path(tmp_path / "results", record)

    monkeypatch.chdir(tmp_path)  # `vlc compile`'s default output directory
    assert main(["compile", model, "-t", "onnxruntime", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert (tmp_path / "artifacts" / f"{model}-onnxruntime-fp32" / "manifest.json").is_file()
