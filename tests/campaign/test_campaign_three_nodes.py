"""The campaign issue's done-when, as one test: a campaign file over a local three-node Ray
cluster (every node bound to 127.0.0.1) runs onnxruntime and torch cells, a TensorRT-RTX build
and Ascend cells (STAND-IN atc/ais_bench on the one node that has them) on their nodes, loses
one node while it runs a cell (the cell is retried on another matching node), and ends with
one report; the TensorRT-RTX engine is built where the toolchain is and, with no sm86 GPU in
the cluster, is recorded built and not timed. The same file then runs with no cluster here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'vlc[cluster]')")

from tests.campaign.campaign_helpers import campaign_text, run_table  # noqa: E402
from vlc.artifact import Artifact, files_damage  # noqa: E402
from vlc.campaign import load_campaign  # noqa: E402
from vlc.campaign.cells import MACHINE_ENV, worker_dir  # noqa: E402
from vlc.campaign.resources import probe_resources  # noqa: E402
from vlc.records import load_records  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "targets" / "ascend"))
from standin_env import STANDINS, standin_path  # noqa: E402

NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}
# long enough that the node removed while it runs a cell is cut off inside it
CPU_TIMING = "warmup = 1\nduration = 0.5"


@pytest.fixture(scope="module")
def three_nodes():
    """cpu-box (the head): what this machine offers, the TensorRT-RTX toolchain included;
    npu-box: Ascend 310P through the stand-ins; spare-box: onnxruntime and torch, to be lost."""
    from ray.cluster_utils import Cluster

    here = probe_resources()
    if "vlc/trt-build-sm86" not in here:
        pytest.fail("TensorRT-RTX cannot build for sm86 here; the test extra installs tensorrt-rtx")
    c = Cluster(initialize_head=True, head_node_args={
        **NODE, "include_dashboard": False, "resources": here, "env_vars": {MACHINE_ENV: "cpu-box"},
        "_system_config": {"health_check_period_ms": 300, "health_check_timeout_ms": 300,
                           "health_check_failure_threshold": 3}})
    try:
        c.add_node(**NODE, resources={"vlc/ascend310p": 1}, env_vars={
            MACHINE_ENV: "npu-box", "PATH": standin_path(), "VLC_AIS_BENCH": str(STANDINS / "ais_bench_cli"),
            "STANDIN_CANN": "8"})
        c.spare = c.add_node(**NODE, resources={"vlc/onnxruntime": 1, "vlc/torch": 1},
                             env_vars={MACHINE_ENV: "spare-box"})
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def campaign_file(folder: Path) -> Path:
    """One campaign file; its results and report are relative to it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaign.toml"
    path.write_text(campaign_text(
        Path("results"),
        run_table(["onnxruntime", "torch"], name="cpu", requires={"vlc/onnxruntime": 1, "vlc/torch": 1},
                  timing=CPU_TIMING),
        run_table(["trt-rtx"], name="a10", precisions=("fp16",), requires={"vlc/trt-sm86": 1}),
        run_table(["ascend310p"], name="ascend", precisions=("fp16",), batches=(1,),
                  requires={"vlc/ascend310p": 1}),
        report='"report.html"', baseline='"torch/fp32/cpu"'))
    return path


def test_a_campaign_over_three_nodes_loses_one_and_reports_then_runs_here(three_nodes, tmp_path):
    path = campaign_file(tmp_path / "cluster")
    driver = subprocess.Popen([sys.executable, "-m", "vlc", "campaign", "run", str(path), "--cluster",
                               three_nodes.address, "--report", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        graphs = worker_dir(three_nodes.spare.node_id) / "graphs"
        deadline = time.monotonic() + 120
        while not any(graphs.glob("*")):  # a cell has started on the spare node
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no cell started on the spare node"
            time.sleep(0.1)
        three_nodes.remove_node(three_nodes.spare, allow_graceful=False)  # lost while it runs that cell
        out, err = driver.communicate(timeout=240)
    finally:
        driver.kill()
    assert driver.returncode == 0, err[-3000:]
    summary = json.loads(out)
    campaign = load_campaign(path)
    records = {(r.target, r.precision, r.batch): r for r in load_records([campaign.results]).records}
    assert summary["written"] == len(records) == 4 + 2 + 1

    for target in ("onnxruntime", "torch"):  # the spare's cell ran again on the head
        for batch in (1, 2):
            r = records[(target, "fp32", batch)]
            assert r.status == "ok" and r.accuracy.passed and r.machine == "cpu-box", (target, r.machine, r.reason)
            assert r.samples_ms and r.samples_ms["values"]
    ascend = records[("ascend310p", "fp16", 1)]
    assert ascend.status == "ok" and ascend.machine == "npu-box" and ascend.device == "npu"
    for batch in (1, 2):  # built where the toolchain is; no node has an sm86 GPU: not timed, not failed
        trt = records[("trt-rtx", "fp16", batch)]
        assert trt.status == "built" and trt.machine == "cpu-box" and trt.latency_ms is None
        assert trt.reason.startswith("not timed: no live node of the cluster offers vlc/trt-sm86=1")
        build = trt.build
        assert build["machine"] == "cpu-box" and build["main_bytes"] > 0 and build["layers"] > 0
        assert build["precision_check"]["passed"] and build["precision_check"]["min_cosine"] > 0.99
        kept = Artifact.load(campaign.results / build["artifact"])  # on the driver, as the build wrote it
        assert files_damage(kept) is None and kept.file("main").stat().st_size == build["main_bytes"]

    report = (path.parent / "report.html").read_text()
    assert "built, not timed" in report and "cpu-box" in report and "npu-box" in report
    assert "speed-up against torch / fp32" in report

    # the same file with no cluster: every cell here, the engine built and not timed (no GPU
    # here), Ascend unavailable (no toolkit here)
    here = tmp_path / "here"
    here.mkdir()
    shutil.copy(path, here / "campaign.toml")
    local = subprocess.run([sys.executable, "-m", "vlc", "campaign", "run", str(here / "campaign.toml"),
                            "--report", "--json"], capture_output=True, text=True, timeout=240)
    assert local.returncode == 0, local.stderr[-3000:]
    mine = {(r.target, r.batch): r for r in load_records([here / "results"]).records}
    assert len(mine) == 7 and {r.machine for r in mine.values()} == {summary_machine(local.stdout)}
    assert all(mine[(t, b)].status == "ok" for t in ("onnxruntime", "torch") for b in (1, 2))
    built_here = mine[("trt-rtx", 1)]
    assert built_here.status == "built" and "finds no 'cuda' device" in built_here.reason
    assert files_damage(Artifact.load(here / "results" / built_here.build["artifact"])) is None  # kept too
    assert mine[("ascend310p", 1)].status == "unavailable"
    assert (here / "report.html").is_file()


def summary_machine(stdout: str) -> str:
    machines = {cell["machine"] for cell in json.loads(stdout)["cells"]}
    assert len(machines) == 1
    return machines.pop()
