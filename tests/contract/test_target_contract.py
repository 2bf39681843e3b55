"""The contract every target passes: the built-in ones and the example plugin alike.

One case per target, each checked through the command line a user types (and the Target API
where a failure has to be provoked): `vlc targets` lists it with its availability; an unknown
option and a bad option value are one error line that names the option and what it accepts
(exit 2); compiling the small test MLP writes an artifact whose manifest has the required
fields, a sha256 for every file and no absolute path; compiling again reuses it; its outputs
(fp32, and fp16 where the target has it) match the fp32 PyTorch reference within the
precision's tolerance; `vlc profile` reports
min/median/p90/p99; a compile that fails leaves nothing behind (and an existing artifact as it
was); `-o` to a directory vlc did not write is refused.

The example plugin (`onnx-reference`, tests/plugin_dist) is an installed distribution of its
own, loaded through the `vlc` entry-point group: nothing here registers it. The Ascend targets
run against the labelled STAND-IN atc and ais_bench (tests/standins), never a real toolchain.
trt-rtx builds real engines for compute capability 8.6 (preset a10) and, without a GPU, is
held to refusing run and profile in one line. A target whose SDK is missing (trt without
TensorRT) is still held to what needs no SDK; its builds skip with the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import model_ref
from tests.targets.ascend.standin_env import STANDINS, standin_path
from vlc import plugin_manager
from vlc.accuracy import compare_outputs, default_tolerance
from vlc.artifact import Artifact
from vlc.spec import Precision

MODEL = model_ref("mlp")
BATCH = "1,2,4"  # --batch MIN,OPT,MAX of every build
RUN_BATCH = 2
PLUGIN = "onnx-reference"  # tests/plugin_dist, installed by ./dev test


@dataclass(frozen=True)
class Case:
    """What the contract needs to know about one target to run it here."""

    target: str
    # -O values the target must refuse: (option, value, words of what it accepts the line must name)
    bad_values: tuple[tuple[str, str, tuple[str, ...]], ...]
    preset: str | None = None
    options: tuple[str, ...] = ()  # -O options of every build
    standins: bool = False  # the Ascend toolchain: the labelled stand-ins of tests/standins
    always_runs: bool = False  # a CPU target: runs on every machine vlc installs on

    def compile_args(self, out: Path, *options: str, precision: str = "fp32") -> list[str]:
        args = ["compile", MODEL, "-t", self.target, "-p", precision, "--batch", BATCH, "-o", str(out)]
        if self.preset:
            args += ["--preset", self.preset]
        for option in (*self.options, *options):
            args += ["-O", option]
        return args


TRT_LEVEL = (("builder_optimization_level", "fast", ("0-5",)), ("builder_optimization_level", "9", ("0-5",)))
ASCEND_IMPLMODE = (("implmode", "fastest", ("high_performance", "high_precision")),)
ASCEND_GEARS = ("gears=[1,2,4]",)  # one .om for the batch range (a stand-in ATC run each costs seconds)
CASES = {case.target: case for case in (
    Case("torch", (("mode", "fastest", ("eager", "compile", "reduce-overhead", "max-autotune")),),
         always_runs=True),
    Case("onnxruntime", (("graph_optimization_level", "max", ("disable", "basic", "extended", "all")),
                         ("intra_op_threads", "-2", ("non-negative",))), always_runs=True),
    Case("trt", TRT_LEVEL, preset="a10"),
    Case("trt-rtx", TRT_LEVEL, preset="a10"),
    Case("ascend310p", ASCEND_IMPLMODE, options=ASCEND_GEARS, standins=True),
    Case("ascend310", ASCEND_IMPLMODE, options=ASCEND_GEARS, standins=True),
    Case(PLUGIN, (("check_shapes", "maybe", ("on", "off")),), always_runs=True),
)}


def test_every_registered_target_has_a_case_and_the_plugin_is_installed() -> None:
    registered = set(plugin_manager.targets())
    assert PLUGIN in registered, ("the example plugin is not installed: ./dev test installs it "
                                  "(pip install -c constraints.txt -e tests/plugin_dist)")
    assert registered == set(CASES), f"targets without a contract case: {sorted(registered - set(CASES))}"
    assert plugin_manager.load_errors == []


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Case:
    """One target's case, with the stand-in toolchain on PATH where it has one."""
    selected = CASES[request.param]
    if selected.standins:
        monkeypatch.setenv("PATH", standin_path())
        monkeypatch.setenv("VLC_AIS_BENCH", str(STANDINS / "ais_bench_cli"))
        monkeypatch.delenv("VLC_ATC", raising=False)
        monkeypatch.setenv("STANDIN_CANN", "8")
    return selected


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One artifact per target for the whole module (each build is the slow part)."""
    return {"root": tmp_path_factory.mktemp("contract-artifacts")}


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def availability(name: str) -> Any:
    return plugin_manager.get_target(name).available()


def runs_here(name: str) -> bool:
    status = availability(name)
    spec_device = plugin_manager.get_target(name).devices[0]
    return status.ok and spec_device in status.devices


def built(case: Case, precision: str, builds: dict[str, Any], vlc_cli) -> Artifact:
    """The case's artifact at `precision`, built once with `vlc compile` (skips where the target
    cannot build here or does not declare the precision)."""
    key = f"{case.target}-{precision}"
    if key not in builds:
        status = availability(case.target)
        declared = [p.value for p in plugin_manager.get_target(case.target).precisions]
        if precision not in declared:
            builds[key] = f"{case.target} declares no {precision} (it has {', '.join(declared)})"
        elif not status.ok:
            builds[key] = f"{case.target} cannot build here: {status.reason}"
        else:
            out = builds["root"] / key
            code, stdout, stderr = vlc_cli(*case.compile_args(out, precision=precision), "--json")
            assert code == 0, stderr
            summary = json.loads(stdout)
            assert summary["reused"] is False and Path(summary["artifact"]) == out
            builds[key] = Artifact.load(out)
    if isinstance(builds[key], str):
        pytest.skip(builds[key])
    return builds[key]


@pytest.fixture
def artifact(case: Case, builds: dict[str, Any], vlc_cli) -> Artifact:
    """The case's fp32 artifact."""
    return built(case, "fp32", builds, vlc_cli)


@pytest.fixture(scope="module")
def source() -> Any:
    """The test MLP through the front end (cached for the test session), for the reference and the API."""
    from vlc.cli.compile_cmd import absolute_ref
    from vlc.frontend.pipeline import prepare

    return prepare(absolute_ref(MODEL))


# ---- listing and options ---------------------------------------------------------------------
def test_targets_lists_it_with_its_availability(case: Case, vlc_cli) -> None:
    code, stdout, stderr = vlc_cli("targets", "--json")
    assert code == 0, stderr
    row = {t["name"]: t for t in json.loads(stdout)["targets"]}[case.target]
    assert isinstance(row["available"], bool) and "fp32" in row["precisions"]
    assert {option for option, _, _ in case.bad_values} <= set(row["options"])
    if row["available"]:
        assert row["runs_here"] == ("yes" if row["devices"] else "compile only")
    else:
        assert row["runs_here"] == "no" and row["reason"] and "\n" not in row["reason"]
    if case.always_runs or case.standins:  # CPU targets, and the stand-ins satisfy the Ascend checks
        assert row["available"] and row["runs_here"] == "yes", row["reason"]
    if case.target == PLUGIN:  # loaded from the installed distribution, not from vlc's own tree
        assert row["plugin"].startswith("vlc_example_target."), row["plugin"]
    code, stdout, stderr = vlc_cli("targets")
    assert code == 0, stderr
    table_row = next(line for line in stdout.splitlines() if re.search(rf"\b{re.escape(case.target)}\s+│", line))
    assert f"│ {row['runs_here']} " in table_row, table_row
    if row["runs_here"] != "yes":
        assert re.search(rf"^{re.escape(case.target)} (cannot run here|compiles here but cannot run): .+",
                         stdout, re.M), stdout


def test_an_unknown_option_is_one_line_naming_it_and_the_options(case: Case, vlc_cli, tmp_path) -> None:
    code, _, stderr = vlc_cli(*case.compile_args(tmp_path / "art", "no_such_option=1"))
    line = one_line(stderr)
    assert code == 2, stderr
    assert "no_such_option" in line and case.target in line
    for option in plugin_manager.get_target(case.target).options:
        assert option in line, (option, line)
    assert not (tmp_path / "art").exists()


def test_a_bad_option_value_is_one_line_naming_it_and_the_choices(case: Case, vlc_cli, tmp_path) -> None:
    for option, value, accepted in case.bad_values:
        code, _, stderr = vlc_cli(*case.compile_args(tmp_path / "art", f"{option}={value}"))
        line = one_line(stderr)
        assert code == 2, (option, value, stderr)
        assert option in line and value in line, line
        for word in accepted:
            assert word in line, (word, line)
        assert not (tmp_path / "art").exists()


def test_an_output_directory_vlc_did_not_write_is_refused(case: Case, vlc_cli, tmp_path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("mine\n")
    code, _, stderr = vlc_cli(*case.compile_args(precious))
    line = one_line(stderr)
    assert code == 2 and "thesis.txt" in line and "vlc did not write" in line, stderr
    assert sorted(p.name for p in precious.iterdir()) == ["thesis.txt"]
    assert (precious / "thesis.txt").read_text() == "mine\n"


# ---- the artifact ----------------------------------------------------------------------------
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[\w.+@-]+/)+[\w.+@-]*")


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def test_compile_writes_a_manifest_with_the_required_fields(case: Case, artifact: Artifact) -> None:
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    assert manifest["target"] == case.target and manifest["precision"] == "fp32"
    assert manifest["batch_range"] == [1, 4]
    assert manifest["preset"] == (case.preset or plugin_manager.get_target(case.target).default_preset)
    source = manifest["source"]
    assert source["ref"] and re.fullmatch(r"[0-9a-f]{64}", source["hash"])
    assert (artifact.path / source["onnx"]).is_file()  # the fp32 graph travels with the artifact
    files = manifest["files"]
    assert files and "main" in files
    hashes = manifest["files_sha256"]
    assert set(files.values()) <= set(hashes)
    for name, sha in hashes.items():
        path = artifact.path / name
        assert path.is_file() and path.resolve().is_relative_to(artifact.path.resolve()), name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, name
    # copyable: no absolute path but the model reference the user gave (made absolute so that a
    # model file is found from any directory)
    leaked = sorted({found for text in strings(manifest)
                     for found in ABSOLUTE_PATH.findall(text.replace(source["ref"], ""))})
    assert leaked == [], leaked


def test_compiling_again_reuses_the_artifact(case: Case, artifact: Artifact, vlc_cli) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in artifact.path.iterdir()}
    code, stdout, stderr = vlc_cli(*case.compile_args(artifact.path), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["reused"] is True, stdout
    assert {p.name: p.stat().st_mtime_ns for p in artifact.path.iterdir()} == before


# ---- run and profile -------------------------------------------------------------------------
def refused_here(case: Case, vlc_cli, *args: str) -> None:
    """A target that compiles but cannot run here says so in one line, exit 3, then the test skips."""
    code, _, stderr = vlc_cli(*args)
    line = one_line(stderr)
    assert code == 3, stderr
    pytest.skip(f"{case.target} compiles but cannot run here; `vlc {args[0]}` refuses in one line: {line}")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_run_matches_the_fp32_reference(case: Case, precision: str, builds: dict[str, Any], source: Any,
                                        vlc_cli, tmp_path) -> None:
    """Within the precision's tolerance (vlc.accuracy's defaults), on inputs the compile never saw."""
    artifact = built(case, precision, builds, vlc_cli)
    feeds = source.generate_inputs(RUN_BATCH, seed=3)
    np.savez(tmp_path / "inputs.npz", **feeds)
    args = ("run", str(artifact.path), "-i", str(tmp_path / "inputs.npz"), "-o", str(tmp_path / "out"))
    if not runs_here(case.target):
        refused_here(case, vlc_cli, *args)
    code, _, stderr = vlc_cli(*args)
    assert code == 0, stderr
    with np.load(tmp_path / "out" / "outputs.npz") as saved:
        outputs = dict(saved)
    from vlc.frontend.pipeline import torch_outputs

    reference = torch_outputs(source.model, feeds)
    assert all(np.asarray(r).std() > 0.01 for r in reference.values())  # outputs with spread
    report = compare_outputs(outputs, reference, default_tolerance(Precision(precision)))
    assert report.passed, json.dumps(report.to_json(), indent=1, default=str)


def test_profile_reports_min_median_p90_p99(case: Case, artifact: Artifact, vlc_cli) -> None:
    args = ("profile", str(artifact.path), "-b", "4", "-n", "5", "--warmup", "1", "--json")
    if not runs_here(case.target):
        refused_here(case, vlc_cli, *args)
    code, stdout, stderr = vlc_cli(*args)
    assert code == 0, stderr
    records = json.loads(stdout)
    assert [r["batch"] for r in records] == [4]  # the batch asked for, not the compiled opt batch
    for record in records:
        assert record["status"] == "ok" and record["target"] == case.target
        latency = record["latency_ms"]
        assert latency["count"] == 5
        assert 0 < latency["min"] <= latency["median"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        assert isinstance(record["includes_transfers"], bool)
        assert record["settings"]["iterations"] == 5 and record["settings"]["warmup"] == 1


# ---- failures leave nothing behind -----------------------------------------------------------
def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def test_a_failed_compile_leaves_no_half_written_artifact(case: Case, artifact: Artifact, source: Any,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build killed after the target wrote everything leaves the artifact that was there, and
    nothing else, where it was; one killed into a fresh -o leaves no directory at all."""
    target = plugin_manager.get_target(case.target)
    real_compile = type(target)._compile
    written: list[str] = []

    def compile_then_die(self, src, spec, build) -> None:  # the real build, then a kill
        real_compile(self, src, spec, build)
        written.extend(p.name for p in build.path.iterdir())
        raise KeyboardInterrupt("killed mid-build")

    monkeypatch.setattr(type(target), "_compile", compile_then_die)
    existing = tmp_path / "existing" / "art"
    shutil.copytree(artifact.path, existing)
    before = listing(existing.parent)
    with pytest.raises(KeyboardInterrupt):
        target.compile(source, artifact.spec, existing, force=True)
    assert written, "the target's build wrote nothing before the kill"
    assert listing(existing.parent) == before  # the old artifact as it was; no temporaries, no logs beside it

    def write_then_die(self, src, spec, build) -> None:  # killed while writing its first file
        (build.path / "partial.bin").write_bytes(b"\0" * 1024)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(type(target), "_compile", write_then_die)
    fresh = tmp_path / "fresh" / "art"
    fresh.parent.mkdir()
    with pytest.raises(KeyboardInterrupt):
        target.compile(source, artifact.spec, fresh)
    assert list(fresh.parent.iterdir()) == []
