"""vlc.measure and vlc.timing: the one reference runner, the one record factory, the one timing
method, and sessions that profile themselves (real PyTorch and ONNX Runtime throughout)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import model_ref
from vlc import measure
from vlc.accuracy import compare_outputs, default_tolerance
from vlc.errors import InputError, VlcError
from vlc.records import read_record, write_record
from vlc.spec import TargetSpec
from vlc.timing import HOST_CLOCK, HOST_CLOCK_SYNCED, ProfileSettings, host_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    from vlc.frontend.pipeline import prepare

    return prepare(model_ref("mlp"), tmp_path_factory.mktemp("measure-cache"))


@pytest.fixture(scope="module")
def ort_artifact(mlp, tmp_path_factory):
    from vlc.plugin_manager import get_target

    target = get_target("onnxruntime")
    return target, target.compile(mlp, TargetSpec("onnxruntime"), tmp_path_factory.mktemp("ort") / "art")


# ---- the one timing method -------------------------------------------------------------------------

def test_host_profile_says_how_it_timed_and_syncs_after_every_call():
    calls, syncs = [], []
    settings = ProfileSettings(warmup=2, iterations=6)
    cpu = host_profile(lambda: calls.append(1), settings, 4, device="cpu", includes_transfers=True)
    assert cpu.extra["timing"] == HOST_CLOCK == "host clock"
    assert cpu.latency.count == 6 and len(calls) == 8 and cpu.batch == 4 and cpu.device == "cpu"

    calls.clear()
    gpu = host_profile(lambda: calls.append(1), settings, 4, device="cuda", includes_transfers=False,
                       sync=lambda: syncs.append(len(calls)))
    assert gpu.extra["timing"] == HOST_CLOCK_SYNCED == "host clock, synchronised after each call"
    assert syncs == list(range(1, 9))  # after each call, warm-up included
    assert not gpu.includes_transfers


def test_the_timed_loop_reads_breakdowns_outside_the_timed_region():
    """TensorRT reads its CUDA events in `after`: once per call, None while warming up."""
    from vlc.timing import time_host_calls

    seen: list[float | None] = []
    samples = time_host_calls(lambda: None, ProfileSettings(warmup=3, iterations=5), after=seen.append)
    assert seen[:3] == [None, None, None] and seen[3:] == samples and len(samples) == 5


def test_onnxruntime_sessions_profile_themselves(mlp, ort_artifact):
    target, artifact = ort_artifact
    feeds = mlp.generate_inputs(3, seed=0)
    session = target.open(artifact)
    try:
        result = session.profile(feeds, ProfileSettings(warmup=1, iterations=4, per_layer=True), 3)
        again = target.profile(artifact, feeds, ProfileSettings(warmup=1, iterations=3), session=session)
    finally:
        session.close()
    assert result.batch == 3 and result.latency.count == 4 and result.extra["timing"] == "host clock"
    assert result.extra["per_operator"]  # ONNX Runtime's operator profile when per_layer is asked for
    assert again.latency.count == 3 and "per_operator" not in again.extra


# ---- the one reference -----------------------------------------------------------------------------

def test_torch_and_onnxruntime_references_agree_on_the_source_graph(mlp):
    feeds = mlp.generate_inputs(5, seed=3)
    assert float(np.std(feeds["x"])) > 0.5  # inputs with spread
    torch_ref = measure.reference_outputs(measure.REFERENCE_TORCH, mlp.model, feeds)
    onnx_ref = measure.reference_outputs(measure.REFERENCE_ONNX, mlp.onnx_path, feeds)
    assert set(torch_ref) == set(onnx_ref) and torch_ref["output"].shape == (5, 10)
    assert float(np.std(torch_ref["output"])) > 0.01
    report = compare_outputs(onnx_ref, torch_ref, default_tolerance("fp32"))
    assert report.passed, report.to_json()
    # and a different input gives different outputs: the comparison can fail
    other = measure.reference_outputs(measure.REFERENCE_ONNX, mlp.onnx_path, mlp.generate_inputs(5, seed=4))
    assert not compare_outputs(other, torch_ref, default_tolerance("fp32")).passed


def test_reference_mistakes_are_one_line_errors(mlp, tmp_path):
    with pytest.raises(InputError, match="unknown reference 'tf32'"):
        measure.reference_outputs("tf32", mlp.onnx_path, {})
    with pytest.raises(InputError, match="needs a PyTorch model"):
        measure.reference_outputs(measure.REFERENCE_TORCH, mlp.onnx_path, {})
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(VlcError, match=r"onnxruntime cannot load .*broken.onnx on the CPU") as info:
        measure.onnx_cpu_outputs(broken, {})
    assert "\n" not in str(info.value)


def test_the_cpu_reference_takes_only_the_graphs_inputs(mlp):
    feeds = mlp.generate_inputs(2, seed=0)
    plain = measure.onnx_cpu_outputs(mlp.onnx_path, feeds)
    extra = measure.onnx_cpu_outputs(mlp.onnx_path, {**feeds, "unused": np.zeros(3)})
    np.testing.assert_array_equal(plain["output"], extra["output"])


def test_every_cpu_reference_site_goes_through_vlc_measure():
    """No other module opens its own ONNX Runtime CPU reference session."""
    sites = []
    for path in [*(ROOT / "compiler").rglob("*.py"), *(ROOT / "targets").rglob("*.py")]:
        if path.name == "measure.py":
            continue
        if re.search(r"InferenceSession\([^)]*\[\s*\"CPUExecutionProvider\"\s*\]", path.read_text()):
            sites.append(str(path.relative_to(ROOT)))
    assert sites == []


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_measure_imports_no_backend_and_targets_no_bench():
    assert not {m for m in _imports(ROOT / "compiler" / "measure.py") if m.startswith(("vlc.targets", "vlc.bench",
                                                                                        "vlc.cli"))}
    for path in (ROOT / "targets").rglob("*.py"):
        assert not {m for m in _imports(path) if m.startswith("vlc.bench")}, path
    code = ("import sys, vlc.measure; print(sorted(m for m in sys.modules if m.startswith(('vlc.targets', "
            "'vlc.bench', 'vlc.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- the one record factory ------------------------------------------------------------------------

def test_make_record_says_what_was_measured(tmp_path):
    env = {"host": "box", "vlc_version": "9.9.9", "cpu": {"model": "Test CPU"}}
    result = host_profile(lambda: None, ProfileSettings(warmup=0, iterations=3), 2, device="cpu",
                          includes_transfers=True)
    result.extra.update({"torch_mode": "compile", "compile_seconds": 1.5, "per_operator": [{"op": "MatMul"}]})
    record = measure.make_record(model="mlp@test", target="onnxruntime", precision="fp32", batch=2, machine="box",
                                 status="ok", source_hash="ab" * 32, env=env,
                                 settings=measure.profile_settings(ProfileSettings(iterations=3), seed=1),
                                 result=result, flops=None)
    assert record.settings["vlc_version"] == "9.9.9" and record.settings["timing"] == "host clock"
    assert record.settings["iterations"] == 3 and record.settings["seed"] == 1
    assert record.device_name == "Test CPU" and record.latency_ms["count"] == 3
    # the session's facts about the measurement reach the record; large tables do not
    assert record.settings["measured"] == {"torch_mode": "compile", "compile_seconds": 1.5}
    assert "FLOPs could not be counted from the ONNX graph" in record.warnings
    path = write_record(tmp_path, record)
    assert path.parent.name == "mlp@test" and read_record(path).settings == record.settings


def test_accuracy_of_a_failing_report_is_recorded_as_failed():
    rng = np.random.default_rng(1)
    reference = {"y": rng.normal(size=(4, 8)).astype(np.float32)}
    wrong = {"y": -reference["y"]}
    acc = measure.accuracy_of(compare_outputs(wrong, reference, default_tolerance("fp32")), measure.REFERENCE_TORCH)
    assert acc.passed is False and acc.cosine == pytest.approx(-1.0) and acc.reference == "torch"
    right = measure.accuracy_of(compare_outputs(reference, reference, default_tolerance("fp32")), "torch")
    assert right.passed is True and right.max_abs == 0.0


# ---- vlc compare ---------------------------------------------------------------------------------

def test_compare_table_tells_a_cosine_from_its_threshold():
    from vlc.cli.compare_cmd import cosine_text, table_view

    assert cosine_text(0.99998) == "0.99998" and cosine_text(0.99998) != cosine_text(0.99999)
    assert cosine_text(0.9999949) != cosine_text(0.99999)
    view = table_view({"outputs": [{"name": "y", "cosine": 0.999984}], "passed": True})
    assert view["outputs"][0]["cosine"] == "0.999984"


def test_compare_prints_the_cosine_in_full(vlc_cli, tmp_path):
    art = tmp_path / "fp16"
    code, _, err = vlc_cli("compile", model_ref("mlp"), "-t", "onnxruntime", "-p", "fp16", "-o", art)
    assert code == 0, err
    code, out, err = vlc_cli("compare", art, "--reference", "onnx")
    assert code == 0, err
    lines = out.splitlines()
    header = [c.strip() for c in next(line for line in lines if "cosine" in line and "┃" in line).split("┃")]
    row = [c.strip() for c in next(line for line in lines if line.startswith("│ output")).split("│")]
    cosine = row[header.index("cosine")]
    assert re.fullmatch(r"0\.\d{6,}|1", cosine), out  # six decimals at least (1 only when exactly 1)
    assert cosine != "1"  # an fp16 build is not exact, so the digits must show
