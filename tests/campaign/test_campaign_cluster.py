"""`vlc campaign run FILE --cluster ADDRESS` on a local multi-node Ray cluster (every node bound
to 127.0.0.1): cells land on the nodes offering their run's `requires` (each record names its
node), the Ascend cells run against the STAND-IN atc/ais_bench on the one node that has them,
records match the local path's, a re-run after an interrupted driver skips finished cells, and
a node removed mid-campaign has its cells retried on another matching node or recorded failed
while the rest finish."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'vlc[cluster]')")

from tests.campaign.campaign_helpers import MLP, by_cell, run_table  # noqa: E402
from vlc.campaign import load_campaign, run_cluster  # noqa: E402
from vlc.campaign.cells import MACHINE_ENV, worker_dir  # noqa: E402
from vlc.records import load_records  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "targets" / "ascend"))
from standin_env import STANDINS, standin_path  # noqa: E402

NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}


@pytest.fixture(scope="module")
def cluster():
    """Head: onnxruntime; a torch node; an Ascend node with the stand-ins on its PATH."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={
        **NODE, "include_dashboard": False, "resources": {"vlc/onnxruntime": 1},
        "env_vars": {MACHINE_ENV: "cpu-box"},
        # a removed node is declared dead within about a second, not Ray's default of many
        "_system_config": {"health_check_period_ms": 300, "health_check_timeout_ms": 300,
                           "health_check_failure_threshold": 3}})
    try:
        torch_node = c.add_node(**NODE, resources={"vlc/torch": 1, "vlc/trt-sm86": 1},
                                env_vars={MACHINE_ENV: "torch-box"})
        npu_node = c.add_node(**NODE, resources={"vlc/ascend310p": 1}, env_vars={
            MACHINE_ENV: "npu-box", "PATH": standin_path(), "VLC_AIS_BENCH": str(STANDINS / "ais_bench_cli"),
            "STANDIN_CANN": "8"})
        c.nodes = {"cpu-box": c.head_node.node_id, "torch-box": torch_node.node_id, "npu-box": npu_node.node_id}
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def placed_campaign(write_campaign, **top):
    return write_campaign(
        run_table(["onnxruntime"], requires={"vlc/onnxruntime": 1}),
        run_table(["torch"], requires={"vlc/torch": 1}),
        run_table(["ascend310p"], requires={"vlc/ascend310p": 1}, precisions=("fp16",), batches=(1,)), **top)


def test_cells_land_on_their_nodes_and_resume_after_an_interrupted_driver(cluster, tmp_path, write_campaign,
                                                                           vlc_cli):
    path = placed_campaign(write_campaign)
    campaign = load_campaign(path)

    class Interrupted(Exception):
        pass

    def interrupt(text: str, done: int, total: int) -> None:
        if done >= 1:  # the driver dies right after the first record is written
            raise Interrupted

    with pytest.raises(Interrupted):
        run_cluster(campaign, cluster.address, interrupt)
    assert not ray.is_initialized()
    first = load_records([campaign.results]).records
    assert len(first) == 1 and first[0].status == "ok"

    code, out, err = vlc_cli("campaign", "run", path, "--cluster", cluster.address, "--json")
    assert code == 0, err
    import json

    summary = json.loads(out)
    assert summary["written"] == 4 and summary["skipped"] == 1  # the interrupted run's record stands
    records = by_cell(load_records([campaign.results]).records)
    assert len(records) == 5
    expected = {"onnxruntime": "cpu-box", "torch": "torch-box", "ascend310p": "npu-box"}
    for (_model, target, _precision, _batch), r in records.items():
        assert r.status == "ok", r.reason
        assert r.machine == expected[target] and r.node == cluster.nodes[r.machine], (target, r.machine)
        assert r.accuracy.passed
    ascend = records[("mlp", "ascend310p", "fp16", 1)]
    assert ascend.device == "npu" and ascend.accuracy.reference == "torch"  # the driver's reference
    assert ascend.artifact["tool_versions"]  # built by the stand-in atc on its node

    # the same records as this machine's `vlc bench` would write: graph, reference, settings
    code, _, err = vlc_cli("bench", MLP, "--targets", "onnxruntime,torch", "--batch", "1,2", "--warmup", "1",
                           "--iterations", "5", "--results", tmp_path / "bench")
    assert code == 0, err
    for cell, local in by_cell(load_records([tmp_path / "bench"]).records).items():
        remote = records[cell]
        assert remote.source_hash == local.source_hash and remote.model_ref == local.model_ref
        assert remote.accuracy.reference == local.accuracy.reference == "torch"
        assert remote.accuracy.max_abs == pytest.approx(local.accuracy.max_abs, abs=1e-6)
        assert remote.settings["iterations"] == local.settings["iterations"] == 5
        assert remote.flops_per_sample == local.flops_per_sample

    code, out, err = vlc_cli("campaign", "run", path, "--cluster", cluster.address, "--json")  # all done
    assert code == 0, err
    assert json.loads(out)["written"] == 0 and json.loads(out)["skipped"] == 5


def test_no_matching_node_is_recorded_unavailable(cluster, write_campaign, vlc_cli):
    path = write_campaign(run_table(["onnxruntime"], requires={"vlc/trt-sm90": 1}, batches=(1,)),
                          run_table(["onnxruntime"], requires={"vlc/onnxruntime": 1}, batches=(2,)),
                          run_table(["trt-rtx"], requires={"vlc/trt-sm86": 1}, batches=(4,), precisions=("fp16",)))
    code, out, err = vlc_cli("campaign", "run", path, "--cluster", cluster.address)
    assert code == 0, err
    records = {r.batch: r for r in load_records([load_campaign(path).results]).records}
    assert records[1].status == "unavailable"
    assert "no live node of the cluster offers vlc/trt-sm90=1" in records[1].reason
    assert records[1].machine == "unplaced"
    assert records[2].status == "ok" and records[2].machine == "cpu-box"
    trt = records[4]  # on the node offering vlc/trt-sm86, whatever that node has
    assert trt.machine == "torch-box" and trt.node == cluster.nodes["torch-box"] and trt.target == "trt-rtx"
    from vlc.targets.trt.cuda import gpus

    if not gpus()[0]:
        assert trt.status == "unavailable" and "finds no 'cuda' device" in trt.reason
    else:
        assert trt.status == "ok" and trt.device == "cuda"


def test_a_node_lost_mid_campaign(cluster, write_campaign, vlc_cli):
    """The node offering vlc/x and vlc/y dies while it runs their cells: the vlc/x cell finishes
    on the node that joins with vlc/x, the vlc/y cell (no node offers it any more) is failed
    with the reason, the head's cell finishes."""
    # one CPU: one of its two cells runs, the other waits; either way the removal cuts the
    # running one off and leaves the other without a node
    doomed = cluster.add_node(**NODE, resources={"vlc/x": 1, "vlc/y": 1}, env_vars={MACHINE_ENV: "doomed"})
    slow = "warmup = 0\nduration = 3.0"
    path = write_campaign(
        run_table(["onnxruntime"], requires={"vlc/x": 1}, batches=(1,), timing=slow),
        run_table(["onnxruntime"], requires={"vlc/y": 1}, batches=(2,), timing=slow, model=MLP.replace(":mlp", ":cnn")),
        run_table(["onnxruntime"], requires={"vlc/onnxruntime": 1}, batches=(4,)))
    # the driver is its own process, as a user runs it; this test plays the failing machine room
    driver = subprocess.Popen([sys.executable, "-m", "vlc", "campaign", "run", str(path), "--cluster",
                               cluster.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        graphs = worker_dir(doomed.node_id) / "graphs"
        while not any(graphs.glob("*")):  # a cell has started there
            assert driver.poll() is None and time.monotonic() < deadline, "no cell started on the doomed node"
            time.sleep(0.2)
        cluster.remove_node(doomed, allow_graceful=False)
        # a replacement joins within the driver's grace (vlc.campaign.runner.STRAND_GRACE_S)
        spare_node = cluster.add_node(**NODE, resources={"vlc/x": 1}, env_vars={MACHINE_ENV: "spare"})
        spare = spare_node.node_id
        out, err = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 1, err  # one cell failed: its records say why
    assert "1 of 3 record(s) failed" in err
    records = {r.batch: r for r in load_records([load_campaign(path).results]).records}
    assert records[1].status == "ok" and records[1].machine == "spare" and records[1].node == spare
    assert records[2].status == "failed" and records[2].machine == "unplaced"
    assert "its node" in records[2].reason and "vlc/y" in records[2].reason
    assert records[4].status == "ok" and records[4].machine == "cpu-box"

    # the spare machine leaves too: its finished cell stands on a re-run, the others are resumed
    cluster.remove_node(spare_node, allow_graceful=False)
    cluster.wait_for_nodes()
    code, out, err = vlc_cli("campaign", "run", path, "--cluster", cluster.address, "--json")
    assert code == 0, err  # the vlc/y cell is unavailable now (no node offers it), not failed
    import json

    summary = json.loads(out)
    assert summary["skipped"] == 2 and summary["written"] == 1
    again = {(r.machine, r.batch): r for r in load_records([load_campaign(path).results]).records}
    assert again[("spare", 1)].status == "ok" and ("unplaced", 1) not in again
    assert again[("unplaced", 2)].status == "unavailable" and "vlc/y" in again[("unplaced", 2)].reason


def test_built_on_one_node_timed_on_another(cluster, write_campaign, vlc_cli):
    """build_requires: the artifact is compiled on the node offering them, kept in the results
    folder and timed on the node offering requires; a node that cannot time it leaves the cell
    'built, not timed' with the reason, not failed."""
    path = write_campaign(
        run_table(["onnxruntime"], requires={"vlc/onnxruntime": 1}, build_requires={"vlc/torch": 1}),
        run_table(["trt-rtx"], requires={"vlc/trt-sm86": 1}, build_requires={"vlc/torch": 1}, batches=(1,),
                  precisions=("fp16",)))
    code, out, err = vlc_cli("campaign", "run", path, "--cluster", cluster.address, "--json")
    assert code == 0, err
    results = load_campaign(path).results
    records = {(r.target, r.batch): r for r in load_records([results]).records}
    assert len(records) == 3
    for batch in (1, 2):
        r = records[("onnxruntime", batch)]
        assert r.status == "ok" and r.accuracy.passed and r.machine == "cpu-box"  # timed where requires are
        assert r.build["machine"] == "torch-box" and r.build["node"] == cluster.nodes["torch-box"]
        assert r.samples_ms and len(r.samples_ms["values"]) == r.latency_ms["count"] == 5
    kept = results / records[("onnxruntime", 1)].build["artifact"]
    assert kept.is_dir() and kept.name == "onnxruntime-fp32.artifact" and kept.parent.parent.name == "torch-box"
    from vlc.artifact import Artifact, files_damage

    assert files_damage(Artifact.load(kept)) is None  # the bytes the build node wrote
    trt = records[("trt-rtx", 1)]
    from vlc.targets.trt.cuda import gpus

    if not gpus()[0]:  # torch-box offers vlc/trt-sm86 but has no GPU: built there, timed nowhere
        assert trt.status == "built" and trt.machine == "torch-box" and trt.latency_ms is None
        assert trt.reason.startswith("not timed: ") and "finds no 'cuda' device" in trt.reason
        assert trt.build["main_file"] and trt.build["main_bytes"] > 0 and trt.build["layers"] > 0
        assert trt.build["precision_check"]["passed"] and trt.device_name == "NVIDIA A10 (build target)"
        engine = results / trt.build["artifact"] / trt.build["main_file"]
        assert engine.stat().st_size == trt.build["main_bytes"]

    # resumed: the timed cells stand; the built one is tried again, as a node offering its requires is there
    code, out, err = vlc_cli("campaign", "run", path, "--cluster", cluster.address, "--json")
    assert code == 0, err
    import json

    assert json.loads(out)["skipped"] == 2 and json.loads(out)["written"] == 1
