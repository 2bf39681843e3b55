"""What a hardware comparison needs from the report: a speed-up chart per model against the
baseline, the spread of each cell's calls as numbers with its iterations, warm-up and threads,
and accuracy per output with the tolerance it was held to."""

from __future__ import annotations

from vlc.records import Accuracy, BenchRecord
from vlc.report.build import build

TOL = {"atol": 0.05, "rtol": 0.05, "min_cosine": 0.999}


def _latency(median: float, std: float) -> dict[str, float]:
    return {"count": 40, "min": median * 0.9, "max": median * 1.5, "mean": median, "median": median,
            "p90": median * 1.1, "p95": median * 1.2, "p99": median * 1.4, "std": std, "cv": std / median}


def _output(name: str, max_abs: float, cosine: float, mismatched: int, passed: bool) -> dict:
    return {"name": name, "max_abs": max_abs, "cosine": cosine, "mismatched": mismatched, "total": 100,
            "passed": passed, "reason": "" if passed else f"cosine {cosine} < 0.999"}


def record(target: str, precision: str, batch: int, median: float, *, std: float = 0.01,
           outputs: list[dict] | None = None, options: dict | None = None) -> BenchRecord:
    outputs = outputs or [_output("logits", 1e-3, 0.99999, 0, True)]
    settings = {"warmup": 7, "iterations": 40, "duration_s": None, "include_transfers": True,
                "timing": "host clock", **({"target_options": options} if options else {})}
    return BenchRecord(
        model="vilbert", target=target, precision=precision, batch=batch, machine="lab", status="ok",
        source_hash="h" * 12, device="cpu", device_name="Xeon 9", latency_ms=_latency(median, std),
        throughput_per_s=batch / median * 1000, includes_transfers=True, settings=settings,
        accuracy=Accuracy(passed=all(o["passed"] for o in outputs), reference="torch",
                          max_abs=max(o["max_abs"] for o in outputs), median_rel=1e-4,
                          cosine=min(o["cosine"] for o in outputs), tolerance=TOL, outputs=outputs),
        environment={"cpu": {"model": "Xeon 9", "usable_cores": 4}})


RECORDS = [
    record("torch", "fp32", 1, 10.0), record("torch", "fp32", 8, 40.0),
    record("onnxruntime", "fp32", 1, 5.0, std=1.0, options={"intra_op_threads": 2}),
    record("onnxruntime", "fp32", 8, 10.0),
    record("onnxruntime", "fp16", 1, 4.0, outputs=[_output("answer", 2e-3, 0.9999, 0, True),
                                                 _output("boxes", 0.4, 0.98, 17, False)]),
]


def _table(doc, caption: str):
    found = [t for s in doc.sections for t in s.tables if caption in t.title]
    assert found, [t.title for s in doc.sections for t in s.tables]
    return found[0]


def test_timing_table_gives_spread_iterations_warmup_and_threads():
    doc = build(RECORDS, plots=False)
    table = _table(doc, "vilbert: how each cell was timed")
    header = table.header
    rows = {(r[0].text, r[1].text): {h: c for h, c in zip(header, r)} for r in table.rows}
    steady = rows[("torch / fp32 / Xeon 9", "8")]
    assert steady["timed calls"].text == "40" and steady["asked"].text == "40" and steady["warm-up"].text == "7"
    assert steady["threads"].text == "default (4 cores)"
    assert steady["p90"].text == "44.00 ms" and steady["p99"].text == "56.00 ms" and steady["CV"].text == "0.0%"
    noisy = rows[("onnxruntime / fp32 / Xeon 9", "1")]
    assert noisy["CV"].text == "20.0%" and noisy["CV"].css == "fail"  # above the 2.5% warning
    assert noisy["threads"].text == "2"  # the cell's intra_op_threads option


def test_accuracy_per_output_with_the_tolerance():
    doc = build(RECORDS, plots=False)
    table = _table(doc, "Accuracy per output")
    rows = {(r[1].text, r[2].text): r for r in table.rows}
    boxes = rows[("onnxruntime / fp16 / Xeon 9", "boxes")]
    assert [c.text for c in boxes[3:8]] == ["0.4", "0.980000", "17 of 100", "atol 0.05, rtol 0.05, min_cosine 0.999",
                                            "FAIL"]
    assert "cosine 0.98" in boxes[8].text
    answer = rows[("onnxruntime / fp16 / Xeon 9", "answer")]
    assert answer[7].text == "pass" and answer[5].text == "0 of 100"  # the other output of the same cell passed


def test_a_speedup_chart_per_model_against_the_baseline():
    doc = build(RECORDS, plots=True)
    section = next(s for s in doc.sections if s.title == "Model: vilbert")
    speedup = next(f for f in section.figures if f.name.endswith("-speedup"))
    assert speedup.png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "speed-up against torch / fp32 / Xeon 9" in speedup.caption
    from vlc.report.build import ModelView, column_of, speedups

    view = ModelView("vilbert", RECORDS)
    bars = {view.labels[c]: {b: v for b, v, _ in p} for c, p in speedups(view, column_of(RECORDS[0]))}
    assert bars == {"onnxruntime / fp32 / Xeon 9": {1: 2.0, 8: 4.0}, "onnxruntime / fp16 / Xeon 9": {1: 2.5}}
    # no baseline measured for the model: no chart, and nothing else goes missing
    alone = build([r for r in RECORDS if r.target == "onnxruntime"], plots=True, baseline="onnxruntime/fp16")
    names = [f.name for s in alone.sections for f in s.figures]
    assert any(n.endswith("-speedup") for n in names) and any(n.endswith("-latency") for n in names)
