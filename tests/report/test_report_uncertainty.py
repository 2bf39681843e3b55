"""The report's numbers beyond medians: a bootstrap interval on every speed-up from the raw
samples, cells built and not timed shown as such (with what was built), each machine's timing
conditions and software side by side, and the raw samples as a CSV file that comes with it."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from tests.report.test_report_comparison import record
from vlc.records import kept_samples
from vlc.report.build import build
from vlc.report.render import to_html, write
from vlc.report.uncertainty import ratio_interval


def _timed(target: str, batch: int, median: float, spread: float, seed: int, calls: int = 200):
    values = np.random.default_rng(seed).normal(median, spread, calls).clip(min=median * 0.5)
    r = record(target, "fp32", batch, float(np.median(values)))
    r.samples_ms = kept_samples(values)
    return r


def _table(doc, caption: str):
    found = [t for s in doc.sections for t in s.tables if caption in t.title]
    assert found, [t.title for s in doc.sections for t in s.tables]
    return found[0]


def test_the_interval_covers_the_true_ratio_and_widens_with_the_spread():
    rng = np.random.default_rng(1)
    base, fast = rng.normal(10.0, 0.2, 300), rng.normal(5.0, 0.1, 300)
    low, high = ratio_interval(base, fast)
    assert low < 2.0 < high and high - low < 0.05  # steady calls: a tight interval around 2
    noisy_low, noisy_high = ratio_interval(rng.normal(10.0, 3.0, 300), rng.normal(5.0, 1.5, 300))
    assert noisy_high - noisy_low > 5 * (high - low)
    assert ratio_interval(base, fast) == (low, high)  # seeded: one set of records, one report
    assert ratio_interval(base[:4], fast) is None  # too few calls for an interval


def test_speedup_table_gives_the_interval_and_says_when_there_is_none():
    records = [_timed("torch", 1, 10.0, 0.3, 0), _timed("onnxruntime", 1, 4.0, 0.1, 1),
               record("onnxruntime", "fp16", 1, 2.0)]  # no raw samples
    doc = build(records, plots=True)
    table = _table(doc, "vilbert: speed-up against torch / fp32")
    cells = {h: c.text for h, c in zip(table.header, table.rows[0])}
    value, interval = cells["onnxruntime / fp32 / Xeon 9"].split(" ", 1)
    low, high = (float(x) for x in interval.strip("[]").split("–"))
    assert low < float(value.rstrip("x")) < high and low > 2.3 and high < 2.7
    assert cells["onnxruntime / fp16 / Xeon 9"].endswith(" ?")
    assert any("bootstrap interval" in note for note in table.notes)
    figure = next(f for s in doc.sections for f in s.figures if f.name.endswith("-speedup"))
    assert "whiskers" in figure.caption and figure.png[:4] == b"\x89PNG"


def _built(batch: int):
    r = record("trt-rtx", "fp16", batch, 1.0)
    r.status, r.latency_ms, r.throughput_per_s, r.accuracy = "built", None, None, None
    r.machine, r.device, r.device_name = "cpu-box", "cuda", "NVIDIA A10 (build target)"
    r.reason = "not timed: no live node of the cluster offers vlc/trt-sm86=1"
    r.build = {"machine": "cpu-box", "seconds": 4.83, "main_file": "model.engine", "main_bytes": 6_677_732,
               "layers": 184, "layers_source": "builder verbose log",
               "precision_check": {"precision": "fp16", "passed": True, "min_cosine": 0.999969, "max_abs": 0.0137,
                                   "tolerance": {"atol": 0.05}, "inputs": "given feeds", "runtime": "onnxruntime"},
               "artifact": "cpu-box/vilbert/trt-rtx-fp16.artifact"}
    return r


def test_built_and_not_timed_cells_say_so_and_what_was_built():
    records = [record("torch", "fp32", 1, 10.0), _built(1), _built(2)]
    doc = build(records, plots=False)
    latency = _table(doc, "vilbert: latency and throughput")
    column = latency.header.index("trt-rtx / fp16 / A10 (build target)")
    assert latency.rows[0][column].text == "built, not timed [1]"
    assert any("no live node of the cluster offers vlc/trt-sm86=1" in n for n in latency.notes)
    builds = _table(doc, "Builds:")
    row = {h: c.text for h, c in zip(builds.header, builds.rows[0])}
    assert row["batches"] == "1, 2" and row["built on"] == "cpu-box" and row["build time"] == "4.83 s"
    assert row["main file"] == "model.engine · 6.68 MB" and row["layers"] == "184"
    assert row["precision check"] == "pass · cos 0.999969 · max abs 0.0137" and row["timed on"] == "not timed"
    assert row["artifact kept at"] == "cpu-box/vilbert/trt-rtx-fp16.artifact"
    missing = _table(doc, "Cells not measured")
    assert [c.text for c in missing.rows[0][2:4]] == ["built, not timed", "1, 2"]
    speedup = _table(doc, "speed-up against torch")
    assert speedup.rows[0][speedup.header.index("trt-rtx / fp16 / A10 (build target)")].text == "—"


def test_timing_conditions_and_software_per_machine():
    a, b = record("torch", "fp32", 1, 10.0), record("torch", "fp32", 1, 8.0)
    b.machine = "box-2"
    gpu = {"name": "NVIDIA A10", "driver": "550.1", "persistence_mode": "Enabled", "sm_clock_mhz": 1695.0,
           "max_sm_clock_mhz": 1695.0, "power_limit_w": 150.0}
    a.environment = {"cpu": {"model": "Xeon 9", "usable_cores": 4}, "sdk": {"torch": "2.5.0", "onnx": "1.17.0"},
                     "python": "3.11.7", "gpus": [gpu],
                     "timing_conditions": {"governor": "performance", "frequency_driver": "intel_pstate",
                                           "turbo": "off", "smt": "on", "cpu_quota": None,
                                           "thread_variables": {"OMP_NUM_THREADS": "4"},
                                           "load_average": [0.1, 0.2, 0.3], "virtual_machine": False}}
    b.environment = {"cpu": {"model": "Xeon 9"}, "sdk": {"torch": "2.6.0"}, "python": "3.12.1"}  # an older vlc
    doc = build([a, b], plots=False)
    conditions = {r[0].text: [c.text for c in r] for r in _table(doc, "Timing conditions per machine").rows}
    assert conditions["lab"][1:8] == ["performance (intel_pstate)", "off", "on", "none",
                                      "4 usable; OMP_NUM_THREADS=4", "0.1 / 0.2 / 0.3", "no"]
    assert conditions["lab"][8] == "A10: persistence enabled, SM clock 1695/1695 MHz, power cap 150 W"
    assert conditions["box-2"][1] == "not recorded (older vlc)"
    software = _table(doc, "Software per machine")
    assert software.header == ["package", "box-2", "lab"]
    rows = {r[0].text: r for r in software.rows}
    assert [c.text for c in rows["torch"][1:]] == ["2.6.0", "2.5.0"] and rows["torch"][1].css == "fail"  # differs
    assert [c.text for c in rows["onnx"][1:]] == ["—", "1.17.0"]


def test_raw_samples_come_with_the_report(tmp_path):
    records = [_timed("torch", 1, 10.0, 0.3, 0, calls=30), _timed("onnxruntime", 1, 4.0, 0.1, 1, calls=20),
               record("onnxruntime", "fp16", 1, 2.0)]
    doc = build(records, plots=False)
    section = next(s for s in doc.sections if s.title == "Raw timing samples")
    (attachment,) = section.attachments
    rows = list(csv.DictReader(io.StringIO(attachment.data.decode())))
    assert len(rows) == 50 and {r["target"] for r in rows} == {"torch", "onnxruntime"}
    torch_calls = [float(r["ms"]) for r in rows if r["target"] == "torch"]
    assert torch_calls == pytest.approx(records[0].samples_ms["values"])  # the record's own values, in order
    assert rows[0]["call"] == "0" and rows[1]["call"] == "1" and rows[0]["stride"] == "1"
    assert any("1 timed cell(s) have no raw samples" in p for p in section.paragraphs)
    html = to_html(doc)
    assert 'download="samples.csv" href="data:text/csv;base64,' in html
    written = write(doc, tmp_path / "report.md")
    beside = tmp_path / "report-samples.csv"
    assert beside in written and beside.read_bytes() == attachment.data
    assert "[report-samples.csv](report-samples.csv)" in (tmp_path / "report.md").read_text()
