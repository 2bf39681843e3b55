"""ais_bench summaries (JSON and console, in the documented formats) and the three ways to run it."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from vlc.signature import Signature, TensorSig
from vlc.targets.ascend import ais_bench
from vlc.targets.ascend.target import map_outputs

SUMMARY_JSON = {
    "filesinfo": {}, "args": ["ais_bench", "--model", "m.om"],
    "H2D_latency": {"min": 0.1, "max": 0.3, "mean": 0.2, "median": 0.2, "percentile(99%)": 0.29, "count": 4},
    "NPU_compute_time": {"min": 5.0, "max": 8.0, "mean": 6.0, "median": 5.5, "percentile(99%)": 7.9, "count": 4},
    "D2H_latency": {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "percentile(99%)": 0.0, "count": 0},
    "npu_compute_time_list": [5.0, 5.0, 6.0, 8.0], "throughput": 1333.3, "pid": 1,
}
NEWER_JSON = {"NPU_compute_time": {"min": 2.0, "max": 4.0, "mean": 3.0, "median": 3.0, "P99": 3.9, "count": 2},
              "npu_compute_time_list": [[10.0, 12.0], [20.0, 24.0]], "throughput": 333.0}
CONSOLE_OLD = """[INFO] -----------------Performance Summary------------------
[INFO] H2D_latency (ms): min = 0.05, max = 0.2, mean = 0.1, median = 0.1, percentile(99%) = 0.19
[INFO] NPU_compute_time (ms): min = 2.5, max = 3.5, mean = 3.0, median = 2.9, percentile(99%) = 3.4
[INFO] D2H_latency (ms): min = 0.01, max = 0.03, mean = 0.02, median = 0.02, percentile(99%) = 0.03
[INFO] throughput 1000*batchsize.mean(8)/NPU_compute_time.mean(3.0): 2666.6666666666665
[INFO] ------------------------------------------------------
"""
CONSOLE_TABLE = """[INFO] -----------------Performance Summary------------------
╒═══════════════════════╤════════╤════════╤════════╤══════════╤════════╕
│ Metric                │    min │    max │   mean │   median │    P99 │
╞═══════════════════════╪════════╪════════╪════════╪══════════╪════════╡
│ NPU_compute_time (ms) │ 1.2500 │ 2.0000 │ 1.5000 │   1.4000 │ 1.9900 │
╘═══════════════════════╧════════╧════════╧════════╧══════════╧════════╛
[INFO] Throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(1.5): 666.67
"""


def test_summary_json_gives_full_statistics_and_transfers():
    summary = ais_bench.parse_summary_json(SUMMARY_JSON)
    profile = summary.to_profile(8, "Ascend310P3 npu:0")
    assert profile.latency.count == 4 and profile.latency.mean == 6.0 and profile.latency.median == 5.5
    assert not profile.includes_transfers
    assert set(profile.breakdown) == {"compute", "h2d"}  # D2H had no samples
    assert profile.breakdown["h2d"].mean == 0.2 and profile.breakdown["h2d"].p99 == 0.29
    assert profile.extra["ais_bench_throughput"] == 1333.3
    assert profile.throughput == pytest.approx(8 * 1000 / 5.5)


def test_newer_summary_keys_and_interval_lists():
    summary = ais_bench.parse_summary_json(NEWER_JSON)
    assert summary.blocks["compute"].p99 == 3.9
    assert summary.compute_times == [2.0, 4.0]


def test_console_summary_lines():
    summary = ais_bench.parse_console(CONSOLE_OLD)
    assert summary.blocks["compute"].mean == 3.0 and summary.blocks["compute"].p99 == 3.4
    assert summary.blocks["h2d"].min == 0.05 and summary.blocks["d2h"].max == 0.03
    assert summary.throughput == pytest.approx(2666.6666666666665) and summary.batchsize == 8
    profile = summary.to_profile(8, "npu")
    assert profile.latency.median == 2.9 and math.isnan(profile.latency.p90)
    assert any("p90" in w for w in profile.warnings)


def test_console_summary_table():
    summary = ais_bench.parse_console(CONSOLE_TABLE)
    block = summary.blocks["compute"]
    assert (block.min, block.max, block.mean, block.median, block.p99) == (1.25, 2.0, 1.5, 1.4, 1.99)
    assert summary.throughput == 666.67


def test_a_summary_without_compute_time_is_an_error():
    with pytest.raises(ais_bench.AisBenchError, match="NPU_compute_time"):
        ais_bench.parse_console("nothing here").to_profile(1, "npu")


def test_outputs_map_by_index_with_signature_dtypes():
    sig = Signature(inputs=(), outputs=(TensorSig("logits", "float32", ("batch", 3)),
                                        TensorSig("ids", "int64", ("batch",))))
    out = map_outputs([np.ones((2, 3), np.float16), np.arange(2, dtype=np.int64)], sig, 2)
    assert out["logits"].dtype == np.float32 and out["ids"].tolist() == [0, 1]
    gear = map_outputs([np.ones((8, 3), np.float32), np.arange(8)], sig, 2, gears=(2, 8))
    assert gear["logits"].shape == (2, 3)


def test_runner_choice(monkeypatch, standins):
    runner, _ = ais_bench.find_ais_bench()
    assert runner.kind == "command" and runner.command[0].endswith("ais_bench_cli")
    monkeypatch.delenv("VLC_AIS_BENCH")
    monkeypatch.setattr(sys, "path", [str(standins), *sys.path])
    runner, _ = ais_bench.find_ais_bench()
    assert runner.kind == "api"
    monkeypatch.setenv("VLC_AIS_BENCH", "/nonexistent/ais")
    runner, why = ais_bench.find_ais_bench()
    assert runner is None and "VLC_AIS_BENCH" in why


def test_cli_arguments():
    args = ais_bench.cli_args(Path("m.om"), [Path("a.npy"), Path("b.npy")], Path("out"), "run", device=1,
                              dym_batch=4, loop=10, warmup=2, summary=True)
    assert args == ["--model", "m.om", "--input", "a.npy,b.npy", "--output", "out", "--output_dirname", "run",
                    "--outfmt", "NPY", "--device", "1", "--loop", "10", "--warmup_count", "2",
                    "--dymBatch", "4", "--display_all_summary", "True"]
