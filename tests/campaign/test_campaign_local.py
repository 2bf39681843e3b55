"""`vlc campaign run FILE` without a cluster: every cell here through `vlc bench`'s own code,
so the records are the ones `vlc bench` writes; a re-run resumes; --report ends with a report."""

from __future__ import annotations

from tests.campaign.campaign_helpers import MLP, by_cell, run_table
from vlc.records import load_records

SAME = ("model", "target", "precision", "batch", "machine", "status", "source_hash", "model_ref", "device",
        "device_name", "includes_transfers", "flops_per_sample", "node")


def test_local_campaign_writes_the_records_of_vlc_bench(tmp_path, write_campaign, vlc_cli):
    campaign = write_campaign(run_table(["onnxruntime", "torch"]))
    code, out, err = vlc_cli("campaign", "run", campaign, "--report")
    assert code == 0, err
    code, _, err = vlc_cli("bench", MLP, "--targets", "onnxruntime,torch", "--batch", "1,2", "--warmup", "1",
                           "--iterations", "5", "--results", tmp_path / "bench")
    assert code == 0, err
    ours, bench = (by_cell(load_records([tmp_path / d]).records) for d in ("results", "bench"))
    assert sorted(ours) == sorted(bench) and len(ours) == 4
    for cell, record in ours.items():
        other = bench[cell]
        assert record.status == "ok" and record.node == ""  # local: no Ray node
        for name in SAME:
            assert getattr(record, name) == getattr(other, name), (cell, name)
        assert record.accuracy.reference == other.accuracy.reference == "torch" and record.accuracy.passed
        assert {k: v for k, v in record.settings.items() if k != "breakdown_ms"} == \
               {k: v for k, v in other.settings.items() if k != "breakdown_ms"}
        assert record.latency_ms["count"] == 5
    assert (tmp_path / "report.html").is_file()  # --report: the results folder's report beside it

    code, out, err = vlc_cli("campaign", "run", campaign, "--json")  # resume: nothing measured again
    assert code == 0, err
    assert '"written": 0' in out and '"skipped": 4' in out
