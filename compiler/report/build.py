"""Build a cross-machine report from bench records: what the tables and plots say.

Per model: latency and throughput (rows: batch size; columns: target / precision / device),
speed-up against a baseline column with a bootstrap interval from the raw samples, achieved
TFLOP/s and share of the device's peak, and plots. Then accuracy, artifacts built apart from
where they were timed (or built and not timed: TensorRT-RTX engines for a GPU no node has),
cells that were not measured (and why), the machines' environments, timing conditions and
software, the raw samples as a CSV file, and, on request, the published reference figures,
marked as not measured by vlc.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import vlc
from vlc.errors import InputError
from vlc.flops import device_peak, utilisation
from vlc.records import FULL_SIZE, SIZE_MARK, BenchRecord
from vlc.report import plots
from vlc.report import published as pub
from vlc.report.document import Attachment, Cell, Document, Figure, Footnotes, Section, Table
from vlc.report.format import flops, ms, per_s, percent, ratio, sci, size
from vlc.report.samples import NAME as SAMPLES_NAME
from vlc.report.samples import samples_csv
from vlc.report.uncertainty import LEVEL, speedup_interval
from vlc.timing import CV_WARN

PRECISION_ORDER = ("fp32", "tf32", "fp16", "bf16", "int8")
TARGET_ORDER = ("torch", "onnxruntime", "trt", "trt-rtx", "ascend")


@dataclass(frozen=True, order=True)
class Column:
    target: str
    precision: str
    device_name: str
    machine: str

    def sort_key(self) -> tuple:
        t = TARGET_ORDER.index(self.target) if self.target in TARGET_ORDER else len(TARGET_ORDER)
        p = PRECISION_ORDER.index(self.precision) if self.precision in PRECISION_ORDER else 99
        return (self.machine, self.device_name, t, self.target, p, self.precision)


def column_of(record: BenchRecord) -> Column:
    return Column(record.target, record.precision, record.device_name or record.device or "?",
                  record.machine)


def short_device(name: str) -> str:
    """'Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz' -> 'Intel Xeon Gold 6338'; 'NVIDIA A10' -> 'A10'."""
    text = re.sub(r"\((R|TM|tm|r)\)", "", name)
    text = re.sub(r"\s+CPU\b|\s*@\s*[\d.]+\s*GHz|\s+\d+-Core Processor", "", text)
    text = re.sub(r"^NVIDIA\s+(GeForce\s+)?", "", text)
    return re.sub(r"\s+", " ", text).strip() or name


def labels(columns: Iterable[Column]) -> dict[Column, str]:
    """'target / precision / device', with '@ machine' only where two machines share a device name."""
    columns = list(columns)
    machines: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for c in columns:
        machines[(c.target, c.precision, c.device_name)].add(c.machine)
    out = {}
    for c in columns:
        label = f"{c.target} / {c.precision} / {short_device(c.device_name)}"
        if len(machines[(c.target, c.precision, c.device_name)]) > 1:
            label += f" @ {c.machine}"
        out[c] = label
    return out


# ---- baseline -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BaselineSpec:
    text: str
    target: str | None
    precision: str | None
    device: str | None

    @classmethod
    def parse(cls, text: str) -> BaselineSpec:
        parts = [p.strip() for p in text.split("/")]
        if not 1 <= len(parts) <= 3 or not all(parts):
            raise InputError(f"cannot read --baseline '{text}'",
                             fix="use TARGET/PRECISION/DEVICE, e.g. torch/fp32/cpu or trt/fp16/A10")
        padded: list[str | None] = [*parts, *[None] * (3 - len(parts))]
        target, precision, device = padded
        return cls(text, (target or "").lower(), precision.lower() if precision else None,
                   device.lower() if device else None)

    def matches(self, column: Column, device_kind: str) -> bool:
        if self.target and column.target.lower() != self.target:
            return False
        if self.precision and column.precision.lower() != self.precision:
            return False
        if self.device:
            haystack = (column.device_name.lower(), device_kind.lower(), column.machine.lower())
            return any(self.device == h or self.device in h for h in haystack)
        return True


def _default_baseline(columns: list[Column], kinds: dict[Column, str]) -> Column | None:
    ranked = sorted(columns, key=lambda c: (c.target != "torch", c.precision != "fp32",
                                            kinds.get(c) != "cpu", c.sort_key()))
    return ranked[0] if ranked else None


# ---- per-model tables ---------------------------------------------------------------------------

MAX_COLUMNS = 8  # data columns per table; wider grids split by device, as the write-ups' tables


def column_groups(columns: list[Column]) -> list[list[Column]]:
    """Columns in tables of at most MAX_COLUMNS, never splitting one machine's columns without need."""
    by_machine: dict[str, list[Column]] = defaultdict(list)
    for c in columns:
        by_machine[c.machine].append(c)
    groups: list[list[Column]] = []
    for machine_columns in by_machine.values():
        for start in range(0, len(machine_columns), MAX_COLUMNS):
            chunk = machine_columns[start:start + MAX_COLUMNS]
            if groups and len(groups[-1]) + len(chunk) <= MAX_COLUMNS:
                groups[-1].extend(chunk)
            else:
                groups.append(list(chunk))
    return groups


def _titled(title: str, group: list[Column], groups: list[list[Column]]) -> str:
    if len(groups) == 1:
        return title
    machines = ", ".join(dict.fromkeys(c.machine for c in group))
    return f"{title} — {machines} ({groups.index(group) + 1} of {len(groups)})"


class ModelView:
    """The records of one model arranged as a grid: batch x column."""

    def __init__(self, model: str, records: list[BenchRecord]):
        self.model = model
        self.records = records
        self.grid: dict[tuple[int, Column], BenchRecord] = {(r.batch, column_of(r)): r for r in records}
        self.columns = sorted({column_of(r) for r in records}, key=Column.sort_key)
        self.batches = sorted({r.batch for r in records})
        self.labels = labels(self.columns)
        self.kinds = {column_of(r): r.device for r in records}

    def cell(self, batch: int, column: Column) -> BenchRecord | None:
        return self.grid.get((batch, column))

    def measured(self, column: Column) -> list[BenchRecord]:
        return [r for b in self.batches if (r := self.cell(b, column)) is not None and r.status == "ok"]


def _status_cell(record: BenchRecord | None, notes: Footnotes) -> Cell | None:
    """Cell for a record that has no measurement (None when it has one)."""
    if record is None:
        return Cell("—", "na", "not run")
    if record.status == "ok":
        return None
    if record.status == "emitted":
        note = f"deploy bundle written to {record.bundle}; run it on the target machine and merge its results"
        return Cell(f"bundle {notes.ref(note)}", "na", record.bundle or "")
    if record.status == "built":
        note = f"{record.target} / {record.precision} built on {record.machine}: {record.reason}"
        return Cell(f"built, not timed {notes.ref(note)}", "na", record.reason)
    text = "n/a" if record.status == "unavailable" else "failed"
    css = "na" if record.status == "unavailable" else "failed"
    return Cell(f"{text} {notes.ref(f'{record.target} / {record.precision} on {record.machine}: {record.reason}')}",
                css, record.reason)


DEVICE_SIDE = "†"
UNSTEADY = "±"


def _header(view: ModelView, group: list[Column], mark_device_side: bool = False) -> list[str]:
    header = ["batch"]
    for c in group:
        measured = view.measured(c)
        device_side = mark_device_side and measured and measured[0].includes_transfers is False
        header.append(view.labels[c] + (f" {DEVICE_SIDE}" if device_side else ""))
    return header


def latency_tables(view: ModelView) -> list[Table]:
    groups = column_groups(view.columns)
    tables = []
    for group in groups:
        notes = Footnotes()
        rows = []
        varied = False
        for batch in view.batches:
            row = [Cell(str(batch))]
            for column in group:
                record = view.cell(batch, column)
                status = _status_cell(record, notes)
                if status is not None:
                    row.append(status)
                    continue
                assert record is not None and record.latency_ms is not None
                cv = record.latency_ms.get("cv") or 0.0
                unsteady = cv > CV_WARN
                row.append(Cell(f"{ms(record.latency_ms['median'])} · {per_s(record.throughput_per_s or 0)}"
                                + (f" {UNSTEADY}" if unsteady else ""),
                                title=f"coefficient of variation {cv:.1%}" if unsteady else ""))
                varied = varied or unsteady
            rows.append(row)
        header = _header(view, group, mark_device_side=True)
        extra = ["Median latency per call of the whole batch · throughput in samples per second at that median; "
                 "timing includes copying inputs to and outputs from the device"
                 + (f", except in columns marked {DEVICE_SIDE} (device-side timing)."
                    if any(h.endswith(DEVICE_SIDE) for h in header) else ".")]
        if varied:
            extra.append(f"{UNSTEADY} the timed calls varied by more than {CV_WARN:.1%} (coefficient of "
                         "variation): other load, clocks or too few iterations; treat the figure with care.")
        tables.append(Table(_titled(f"{view.model}: latency and throughput", group, groups), header, rows,
                            extra + notes.lines()))
    return tables


def speedup_tables(view: ModelView, baseline: Column, how: str) -> list[Table]:
    groups = column_groups(view.columns)
    return [_speedup_table(view, baseline, how, group, groups) for group in groups]


def _speedup_table(view: ModelView, baseline: Column, how: str, group: list[Column],
                   groups: list[list[Column]]) -> Table:
    rows = []
    for batch in view.batches:
        base = view.cell(batch, baseline)
        row = [Cell(str(batch))]
        for column in group:
            record = view.cell(batch, column)
            if column == baseline:
                row.append(Cell("1.00x (baseline)" if record is not None and record.status == "ok" else "—",
                                "baseline"))
            elif (record is None or record.status != "ok" or base is None or base.status != "ok"):
                row.append(Cell("—", "na"))
            else:
                value = base.latency_ms["median"] / record.latency_ms["median"]  # type: ignore[index]
                interval = speedup_interval(base, record)
                unknown = interval is None
                text = ratio(value) + (" ?" if unknown else f" [{interval[0]:.2f}–{interval[1]:.2f}]")  # type: ignore[index]
                row.append(Cell(text, title="no raw samples in one of the records: no interval" if unknown else ""))
        rows.append(row)
    return Table(_titled(f"{view.model}: speed-up against {view.labels[baseline]}", group, groups),
                 _header(view, group), rows,
                 [f"Baseline median latency / median latency at the same batch size (higher is faster); {how}.",
                  f"[low–high]: {LEVEL:.0%} bootstrap interval of that ratio, from the raw per-call times of "
                  "both records (calls resampled with replacement, taken as independent); '?': a record "
                  "without raw samples, so no interval."])


def utilisation_tables(view: ModelView) -> list[Table]:
    if not any(r.flops_per_sample for r in view.records):
        return []
    groups = column_groups(view.columns)
    return [_utilisation_table(view, group, groups) for group in groups]


def _utilisation_table(view: ModelView, group: list[Column], groups: list[list[Column]]) -> Table:
    rows = []
    for batch in view.batches:
        row = [Cell(str(batch))]
        for column in group:
            record = view.cell(batch, column)
            if record is None or record.status != "ok" or record.achieved_tflops is None:
                row.append(Cell("—", "na"))
            elif record.utilisation is None:
                row.append(Cell(f"{sci(record.achieved_tflops)} TFLOP/s · peak unknown",
                                title=record.peak_source or ""))
            else:
                row.append(Cell(f"{sci(record.achieved_tflops)} TFLOP/s · {percent(record.utilisation)}",
                                title=record.peak_source or ""))
        rows.append(row)
    per_sample: dict[float, set[str]] = defaultdict(set)
    for r in view.records:
        if r.flops_per_sample:
            per_sample[r.flops_per_sample].add(r.machine)
    counted = (flops(next(iter(per_sample))) if len(per_sample) == 1 else
               "; ".join(f"{flops(f)} ({', '.join(sorted(m))})" for f, m in sorted(per_sample.items())))
    notes = [f"FLOPs per sample counted from the ONNX graph (matrix work: MatMul, Gemm, Conv, attention): "
             f"{counted}.",
             "Share of the device's dense peak at the cell's precision (int8: TOPS)."]
    sources = sorted({r.peak_source for c in group for r in view.measured(c) if r.peak_source})
    notes += [f"Peak: {source}" for source in sources]
    return Table(_titled(f"{view.model}: achieved TFLOP/s and share of peak", group, groups),
                 _header(view, group), rows, notes)


def _threads(record: BenchRecord) -> str:
    """Threads the cell ran with: the target option when set, else the runtime's default."""
    options = record.settings.get("target_options") or {}
    for name in ("intra_op_threads", "threads", "num_threads"):
        if options.get(name):
            return str(options[name])
    cpu = record.environment.get("cpu", {})
    cores = cpu.get("usable_cores") or cpu.get("logical_cores")
    return f"default ({cores} cores)" if cores else "default"


def measurement_table(view: ModelView) -> Table | None:
    """How each measured cell was timed and how much its calls spread: the numbers behind the
    latency table's median, so two columns can be told apart from noise."""
    rows = []
    for column in view.columns:
        for r in view.measured(column):
            lat, settings = r.latency_ms or {}, r.settings
            timed = (f"{settings['duration_s']:g} s" if settings.get("duration_s") else
                     str(settings.get("iterations", "—")))
            rows.append([Cell(view.labels[column]), Cell(str(r.batch)), Cell(str(lat.get("count", "—"))),
                         Cell(timed), Cell(str(settings.get("warmup", "—"))), Cell(_threads(r)),
                         Cell(ms(lat["median"])), Cell(ms(lat["p90"]) if lat.get("p90") is not None else "—"),
                         Cell(ms(lat["p99"])), Cell(ms(lat["std"]) if lat.get("std") is not None else "—"),
                         Cell(f"{lat['cv']:.1%}" if lat.get("cv") is not None else "—",
                              "fail" if (lat.get("cv") or 0) > CV_WARN else ""),
                         Cell("—" if r.includes_transfers is None else "yes" if r.includes_transfers else "no"),
                         Cell(settings.get("timing", "—"))])
    if not rows:
        return None
    return Table(f"{view.model}: how each cell was timed, and the spread of its calls",
                 ["target / precision / device", "batch", "timed calls", "asked", "warm-up", "threads", "p50",
                  "p90", "p99", "std", "CV", "transfers", "clock"], rows,
                 [f"CV: standard deviation / mean of the timed calls; above {CV_WARN:.1%} (marked) the median "
                  "is less certain. 'asked': the iterations or seconds the run asked for; threads: the "
                  "target's thread option, else its runtime's default."], align="lrrrrlrrrrrll")


Speedup = tuple[int, float, "tuple[float, float] | None"]  # (batch, ratio, its interval or None)


def speedups(view: ModelView, baseline: Column) -> list[tuple[Column, list[Speedup]]]:
    """(column, [(batch, baseline median / median, interval)]) for every measured column but the baseline."""
    out = []
    for column in view.columns:
        if column == baseline:
            continue
        points = []
        for r in view.measured(column):
            base = view.cell(r.batch, baseline)
            if base is not None and base.status == "ok" and base.latency_ms and r.latency_ms:
                points.append((r.batch, base.latency_ms["median"] / r.latency_ms["median"], speedup_interval(base, r)))
        if points:
            out.append((column, points))
    return out


def figures(view: ModelView, datasets: list[pub.Dataset], baseline: Column | None = None) -> list[Figure]:
    series: list[plots.Series] = []
    latency_rows: list[plots.LatencyRow] = []
    for column in view.columns:
        measured = view.measured(column)
        if measured:
            kind, device = f"{column.target}/{column.precision}", f"{column.device_name}@{column.machine}"
            series.append((view.labels[column], [(r.batch, r.throughput_per_s or 0.0) for r in measured],
                           False, kind, device))
            latency_rows.append((view.labels[column], [(r.batch, r.latency_ms or {}) for r in measured], kind, device))
    for dataset in datasets:
        series += [(label, points, True, f"{c['target']}/{c['precision']}", f"published {c['device']}")
                   for (label, points), c in zip(dataset.series(), dataset.columns)]
    if not latency_rows:
        return []
    stem = "".join(ch if ch.isalnum() else "-" for ch in view.model.lower()).strip("-")
    out = []
    bars = speedups(view, baseline) if baseline is not None else []
    if bars:  # what a hardware comparison leads with: how much faster than the baseline, per batch
        name = view.labels[baseline]  # type: ignore[index]
        out.append(Figure(f"{stem}-speedup", plots.speedup_plot(
            f"{view.model}: speed-up against {name}",
            [(view.labels[c], points, f"{c.target}/{c.precision}") for c, points in bars]),
            f"{view.model}: speed-up against {name} at each batch size (baseline median / median; "
            f"above 1 is faster; whiskers: {LEVEL:.0%} bootstrap interval from the raw samples)"))
    return out + [
        Figure(f"{stem}-throughput", plots.throughput_plot(f"{view.model}: throughput", series),
               f"{view.model}: throughput against batch size"
               + (" (dashed lines and hollow markers: published, not measured by vlc)" if datasets else "")),
        Figure(f"{stem}-latency", plots.latency_plot(f"{view.model}: latency", latency_rows),
               f"{view.model}: latency percentiles against batch size")]


# ---- cross-model tables -------------------------------------------------------------------------

def accuracy_table(views: list[ModelView], datasets: list[pub.Dataset]) -> Table:
    rows: list[list[Cell]] = []
    row_css: list[str] = []
    for view in views:
        for column in view.columns:
            checked = [r for r in view.records if column_of(r) == column and r.accuracy is not None]
            if not checked:
                continue
            accs = [r.accuracy for r in checked]
            assert all(a is not None for a in accs)
            passed = all(a.passed for a in accs)  # type: ignore[union-attr]
            worst = [a for a in accs if a.max_abs is not None]  # type: ignore[union-attr]
            reasons = sorted({o.get("reason", "") for a in accs for o in a.outputs  # type: ignore[union-attr]
                              if o.get("reason")})
            rows.append([
                Cell(view.model), Cell(view.labels[column]),
                Cell(", ".join(str(r.batch) for r in sorted(checked, key=lambda r: r.batch))),
                Cell(accs[0].reference),  # type: ignore[union-attr]
                Cell(sci(max(a.max_abs for a in worst)) if worst else "—"),  # type: ignore[union-attr,type-var]
                Cell(sci(max(a.median_rel for a in worst if a.median_rel is not None)) if worst else "—"),  # type: ignore[union-attr]
                Cell(f"{min(a.cosine for a in worst if a.cosine is not None):.6f}" if worst else "—"),  # type: ignore[union-attr]
                Cell("pass" if passed else "FAIL", "pass" if passed else "fail"),
                Cell("; ".join(reasons)[:300])])
            row_css.append("")
    for dataset in datasets:
        for entry in dataset.accuracy:
            rows.append([
                Cell(f"{dataset.model} ({pub.MARK})"),
                Cell(f"{entry['target']} / {entry['precision']} / {entry['device']}"),
                Cell(str(entry.get("batch", "—"))), Cell(entry.get("reference", "—")),
                Cell(sci(entry.get("max_abs"))), Cell(sci(entry.get("median_rel"))), Cell("—"),
                Cell({True: "pass", False: "FAIL"}.get(bool(entry["passed"]), "—") if "passed" in entry else "—"),
                Cell(entry.get("note", ""))])
            row_css.append("published")
    return Table("Accuracy against the reference model, worst over the batch sizes checked",
                 ["model", "target / precision / device", "batches", "reference", "max abs", "median rel",
                  "cosine (min)", "pass", "notes"], rows,
                 ["Each artifact's outputs are compared with the reference model on the same non-degenerate "
                  "inputs (reference 'torch': the PyTorch model; 'onnxruntime-fp32': the fp32 ONNX graph in "
                  "ONNX Runtime), with the default tolerance of the cell's precision.",
                  "Rows marked published are the write-ups' own figures, not measured by vlc."]
                 if any(d.accuracy for d in datasets) else
                 ["Each artifact's outputs are compared with the reference model on the same non-degenerate "
                  "inputs (reference 'torch': the PyTorch model; 'onnxruntime-fp32': the fp32 ONNX graph in "
                  "ONNX Runtime), with the default tolerance of the cell's precision."],
                 row_css=row_css, align="lllrrrrll")


def _tolerance(tolerance: dict) -> str:
    parts = [f"{name} {tolerance[name]:g}" for name in ("atol", "rtol", "min_cosine")
             if isinstance(tolerance.get(name), (int, float))]
    return ", ".join(parts) or "—"


def output_accuracy_table(views: list[ModelView]) -> Table | None:
    """Accuracy per output (worst over the batches checked) with the tolerance it was held to:
    a model with several outputs can pass on one and fail on another."""
    rows = []
    for view in views:
        for column in view.columns:
            worst: dict[str, dict] = {}
            tolerance: dict = {}
            for r in view.records:
                if column_of(r) != column or r.accuracy is None:
                    continue
                tolerance = r.accuracy.tolerance or tolerance
                for o in r.accuracy.outputs:
                    w = worst.setdefault(o.get("name", "?"), {"max_abs": None, "cosine": None, "mismatched": 0,
                                                              "total": 0, "passed": True, "reason": ""})
                    if isinstance(o.get("max_abs"), (int, float)) and o["max_abs"] == o["max_abs"]:
                        w["max_abs"] = max(w["max_abs"] or 0.0, o["max_abs"])
                    if isinstance(o.get("cosine"), (int, float)) and o["cosine"] == o["cosine"]:
                        w["cosine"] = o["cosine"] if w["cosine"] is None else min(w["cosine"], o["cosine"])
                    if (o.get("mismatched") or 0) >= w["mismatched"]:
                        w["mismatched"], w["total"] = o.get("mismatched") or 0, o.get("total") or 0
                    w["passed"] = w["passed"] and bool(o.get("passed", True))
                    w["reason"] = w["reason"] or o.get("reason", "")
            for name, w in worst.items():
                rows.append([Cell(view.model), Cell(view.labels[column]), Cell(name), Cell(sci(w["max_abs"])),
                             Cell(f"{w['cosine']:.6f}" if w["cosine"] is not None else "—"),
                             Cell(f"{w['mismatched']} of {w['total']}" if w["total"] else "—"),
                             Cell(_tolerance(tolerance)),
                             Cell("pass" if w["passed"] else "FAIL", "pass" if w["passed"] else "fail"),
                             Cell(w["reason"][:200])])
    if not rows:
        return None
    return Table("Accuracy per output, worst over the batch sizes checked",
                 ["model", "target / precision / device", "output", "max abs", "cosine (min)",
                  "elements outside tolerance", "tolerance", "pass", "notes"], rows,
                 ["An element is outside the tolerance when |out - ref| > atol + rtol x |ref|; an output "
                  "passes when its cosine to the reference is at least min_cosine and its elements are "
                  "within the tolerance (vlc.accuracy)."], align="lllrrrlll")


def _bytes_cell(build: dict) -> str:
    main, count = build.get("main_file"), build.get("main_bytes")
    return f"{main} · {size(count)}" if main and isinstance(count, int) else "—"


def _check_cell(build: dict) -> Cell:
    check = build.get("precision_check")
    if not check:
        return Cell("— (no conversion)", "na", "the fp32 graph was built as it is")
    passed = check.get("passed")
    parts = [f"cos {check['min_cosine']:.6f}" if isinstance(check.get("min_cosine"), (int, float)) else "",
             f"max abs {sci(check.get('max_abs'))}" if check.get("max_abs") is not None else ""]
    text = ("pass" if passed else "FAIL" if passed is False else "?") + " · " + " · ".join(p for p in parts if p)
    return Cell(text, "pass" if passed else "fail" if passed is False else "",
                f"{check.get('precision')} graph against the fp32 graph in {check.get('runtime')} on "
                f"{check.get('inputs')}; tolerance {_tolerance(check.get('tolerance') or {})}")


def builds_table(views: list[ModelView]) -> Table | None:
    """Artifacts compiled on one machine and timed on another, or built and not timed: what was
    built (where, how long, the main file's size, layers, the precision check of the converted
    graph) and where it was timed, or why it was not."""
    groups: dict[tuple[str, str, str], list[BenchRecord]] = defaultdict(list)
    for view in views:
        for r in view.records:
            if r.build:
                timed = r.machine if r.status == "ok" else f"{r.status}: {r.reason}"
                groups[(view.model, view.labels[column_of(r)], timed)].append(r)
    if not groups:
        return None
    rows = []
    for (model, label, timed), records in sorted(groups.items()):
        build = records[0].build
        layers = build.get("layers")
        seconds = build.get("seconds")
        batches = ", ".join(str(r.batch) for r in sorted(records, key=lambda r: r.batch))
        rows.append([Cell(model), Cell(label), Cell(batches), Cell(build.get("machine", "—")),
                     Cell(f"{seconds:.2f} s" if isinstance(seconds, (int, float)) else "—"),
                     Cell(_bytes_cell(build)), Cell(str(layers) if layers is not None else "—",
                                                    title=build.get("layers_source") or ""),
                     _check_cell(build),
                     Cell(timed if records[0].status == "ok" else "not timed" if records[0].status == "built"
                          else records[0].status, "na" if records[0].status != "ok" else "",
                          records[0].reason),
                     Cell(build.get("artifact", "—"))])
    return Table("Builds: artifacts compiled apart from where they were timed, or built and not timed",
                 ["model", "target / precision / device", "batches", "built on", "build time", "main file",
                  "layers", "precision check", "timed on", "artifact kept at"], rows,
                 ["'built, not timed': the artifact was compiled (a TensorRT-RTX engine needs no GPU to build) "
                  "but no machine with its device timed it; the reason is under 'timed on'. Such a cell is "
                  "not a failure and has no latency; it is timed when a machine with the device runs the "
                  "campaign again.",
                  "Precision check: the converted (fp16/bf16/int8) graph against the fp32 graph on the CPU "
                  "before the build, worst cosine and max abs over the outputs; layers as the target reported "
                  "them (hover for the source). 'artifact kept at': a copy beside the cell's records, relative to the "
                  "results folder."],
                 align="lllllrrlll")


def not_measured_table(views: list[ModelView]) -> Table | None:
    groups: dict[tuple[str, str, str, str], list[int]] = defaultdict(list)
    for view in views:
        for r in view.records:
            if r.status != "ok":
                detail = r.bundle or "" if r.status == "emitted" else r.reason
                groups[(view.model, view.labels[column_of(r)], r.status, detail)].append(r.batch)
    if not groups:
        return None
    rows = [[Cell(model), Cell(label), Cell("built, not timed" if status == "built" else status,
                                           "na" if status != "failed" else "failed"),
             Cell(", ".join(map(str, sorted(batches)))), Cell(detail)]
            for (model, label, status, detail), batches in sorted(groups.items())]
    return Table("Cells not measured", ["model", "target / precision / device", "status", "batches",
                                        "reason or bundle"], rows, align="lllll")


def _short_sdk(sdk: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sdk.items() if k not in ("numpy", "onnxscript", "onnx-ir",
                                                                    "transformers", "onnxsim"))


def environment_table(records: list[BenchRecord]) -> Table:
    newest: dict[str, BenchRecord] = {}
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r.machine] += 1
        if r.machine not in newest or r.created > newest[r.machine].created:
            newest[r.machine] = r
    rows = []
    for machine, r in sorted(newest.items()):
        env = r.environment
        cpu = env.get("cpu", {})
        cores = cpu.get("usable_cores") or cpu.get("logical_cores")
        accel = [f"{d.get('name', '?')} (driver {d.get('driver', '?')})"
                 for d in [*env.get("gpus", []), *env.get("npus", [])]]
        git = env.get("git") or {}
        revision = (git.get("commit", "")[:10] + (" +changes" if git.get("dirty") else "")) if git else "—"
        rows.append([Cell(machine), Cell(env.get("host", "—")), Cell(env.get("os", "—")),
                     Cell(f"{cpu.get('model', '—')}" + (f", {cores} cores" if cores else "")),
                     Cell("; ".join(accel) or "none"), Cell(_short_sdk(env.get("sdk", {})) or "—"),
                     Cell(f"{env.get('vlc_version', '—')} / {revision}"), Cell(str(counts[machine]))])
    return Table("Machines", ["machine", "host", "OS", "CPU", "accelerators", "SDK versions",
                              "vlc / git", "records"], rows, align="lllllllr")


def _newest_by_machine(records: list[BenchRecord]) -> dict[str, BenchRecord]:
    newest: dict[str, BenchRecord] = {}
    for r in records:
        if r.environment and (r.machine not in newest or r.created > newest[r.machine].created):
            newest[r.machine] = r
    return dict(sorted(newest.items()))


def _gpu_conditions(env: dict) -> str:
    parts = []
    for gpu in env.get("gpus", []):
        bits = [f"persistence {gpu['persistence_mode'].lower()}" if gpu.get("persistence_mode") else "",
                f"SM clock {gpu['sm_clock_mhz']:g}/{gpu['max_sm_clock_mhz']:g} MHz"
                if gpu.get("sm_clock_mhz") is not None and gpu.get("max_sm_clock_mhz") is not None else "",
                f"power cap {gpu['power_limit_w']:g} W" if gpu.get("power_limit_w") is not None else "",
                f"CUDA driver API {gpu['driver_cuda']}" if gpu.get("driver_cuda") else ""]
        parts.append(f"{short_device(gpu.get('name', '?'))}: " + (", ".join(b for b in bits if b) or "—"))
    return "; ".join(parts) or "no GPU"


def conditions_table(records: list[BenchRecord]) -> Table | None:
    """What on each machine moves timings: frequency governor, turbo, SMT, CPU quota, thread
    variables, load, virtual machine, GPU clocks and persistence."""
    rows = []
    for machine, r in _newest_by_machine(records).items():
        env = r.environment
        found = env.get("timing_conditions")
        if not isinstance(found, dict):
            rows.append([Cell(machine)] + [Cell("not recorded (older vlc)", "na")] + [Cell("—")] * 7)
            continue
        governor = found.get("governor") or "not exposed"
        if found.get("frequency_driver"):
            governor += f" ({found['frequency_driver']})"
        load = found.get("load_average")
        threads = found.get("thread_variables") or {}
        cpu = env.get("cpu", {})
        rows.append([Cell(machine), Cell(governor, "" if found.get("governor") else "na"),
                     Cell(found.get("turbo") or "not exposed"), Cell(found.get("smt") or "not exposed"),
                     Cell(found.get("cpu_quota") or "none"),
                     Cell(f"{cpu.get('usable_cores') or cpu.get('logical_cores') or '?'} usable; "
                          + (", ".join(f"{k}={v}" for k, v in threads.items()) or "no thread variables set")),
                     Cell(" / ".join(f"{v:g}" for v in load) if load else "—"),
                     Cell("yes" if found.get("virtual_machine") else "no"), Cell(_gpu_conditions(env))])
    if not rows:
        return None
    return Table("Timing conditions per machine", ["machine", "CPU governor", "turbo", "SMT", "CPU quota",
                                                   "cores and thread variables", "load (1/5/15 min)",
                                                   "virtual machine", "GPUs"], rows,
                 ["As recorded with the machine's newest record; 'not exposed': the machine has no such "
                  "control (virtual machines often have no cpufreq). The load is the machine's when its first "
                  "cell of that run was measured: other work running then slows the calls and widens their "
                  "spread. Threads: the variables that size the CPU runtimes' pools, unset where not listed "
                  "(each runtime's default, usually one per usable core)."], align="lllllllll")


def software_table(records: list[BenchRecord]) -> Table | None:
    """Every recorded package version, side by side per machine (differences are what matter)."""
    newest = _newest_by_machine(records)
    packages = sorted({k for r in newest.values() for k in r.environment.get("sdk", {})})
    if not packages:
        return None
    machines = list(newest)
    rows = []
    for name in packages:
        versions = [newest[m].environment.get("sdk", {}).get(name) for m in machines]
        differs = len({v for v in versions if v}) > 1
        rows.append([Cell(name)] + [Cell(v or "—", "fail" if differs and v else "na" if not v else "")
                                    for v in versions])
    rows.append([Cell("python")] + [Cell(newest[m].environment.get("python", "—")) for m in machines])
    return Table("Software per machine", ["package"] + machines, rows,
                 ["Versions of the packages that decide a measurement, from each machine's newest record; a "
                  "version that differs between machines is marked."], align="l" * (len(machines) + 1))


# ---- the document -------------------------------------------------------------------------------

def with_current_peaks(record: BenchRecord) -> BenchRecord:
    """Utilisation against today's peak table (records keep what was known when they were measured)."""
    if record.status != "ok" or not record.flops_per_sample or not record.throughput_per_s:
        return record
    peak = device_peak(record.device_name, record.precision, record.environment, record.device)
    achieved, share = utilisation(record.flops_per_sample, record.throughput_per_s, peak)
    return replace(record, achieved_tflops=achieved, utilisation=share, peak_tflops=peak.tflops,
                   peak_source=peak.source)


def is_resized(model: str) -> bool:
    """Whether the model is an example at a size other than the published one (`name@test`)."""
    _, sep, size = model.partition(SIZE_MARK)
    return bool(sep) and size != FULL_SIZE


def build(records: list[BenchRecord], *, baseline: str | None = None, published: bool = False,
          plots: bool = True, sources: Iterable[str] = (), notes: Iterable[str] = ()) -> Document:
    if not records:
        raise InputError("no bench records to report", where=", ".join(sources) or None,
                         fix="run `vlc bench MODEL --results DIR` first and pass DIR")
    records = [with_current_peaks(r) for r in records]
    by_model: dict[str, list[BenchRecord]] = defaultdict(list)
    for r in records:
        by_model[r.model_id].append(r)  # test-size and full-size models are never one table
    views = [ModelView(model, rs) for model, rs in sorted(by_model.items())]
    spec = BaselineSpec.parse(baseline) if baseline else None
    if spec is not None:
        every = {v.labels[c] for v in views for c in v.columns
                 if v.measured(c) and spec.matches(c, v.kinds.get(c, ""))}
        if not every:
            known = sorted({v.labels[c] for v in views for c in v.columns if v.measured(c)})
            raise InputError(f"--baseline '{baseline}' matches no measured column",
                             fix=f"choose one of: {'; '.join(known)}")
    all_datasets = list(pub.datasets()) if published else []
    used: set[str] = set()
    sections: list[Section] = []
    for view in views:
        # published figures are of the full-size models: never beside a smaller size
        datasets = [d for d in all_datasets if d.matches(view.model) and not is_resized(view.model)]
        used.update(d.id for d in datasets)
        section = Section(f"Model: {view.model}")
        refs = sorted({r.model_ref for r in view.records if r.model_ref})
        machines = sorted({r.machine for r in view.records})
        section.paragraphs.append(f"Model reference: {', '.join(refs) or view.model}; measured on "
                                  f"{len(machines)} machine(s): {', '.join(machines)}.")
        graphs: dict[str, set[str]] = defaultdict(set)
        for r in view.records:
            graphs[r.source_hash].add(r.machine)
        if len(graphs) > 1:
            section.paragraphs.append(
                "The normalized ONNX graph differs between records (different exporter or vlc versions), so "
                "columns compare different graphs of the same model: " + "; ".join(
                    f"{h[:12]} on {', '.join(sorted(m))}" for h, m in sorted(graphs.items())) + ".")
        section.tables += latency_tables(view)
        chosen, how = _choose_baseline(view, spec)
        if chosen is not None:
            section.tables += speedup_tables(view, chosen, how)
        elif spec is not None:
            section.paragraphs.append(f"No speed-up table: --baseline '{spec.text}' was not measured for this model.")
        section.tables += utilisation_tables(view)
        if (measured := measurement_table(view)) is not None:
            section.tables.append(measured)
        section.tables += [pub.table(d) for d in datasets]
        if plots:
            section.figures = figures(view, datasets, chosen)
        sections.append(section)
    per_output = output_accuracy_table(views)
    sections.append(Section("Accuracy", tables=[accuracy_table(views, all_datasets)]
                            + ([per_output] if per_output is not None else [])))
    if (built := builds_table(views)) is not None:
        sections.append(Section("Builds", tables=[built]))
    if (missing := not_measured_table(views)) is not None:
        sections.append(Section("Not measured", ["Cells that this machine could not run, that failed, that "
                                                 "were built and not timed, or for which a deploy bundle was "
                                                 "written instead."], [missing]))
    environment = [environment_table(records)]
    environment += [t for t in (conditions_table(records), software_table(records)) if t is not None]
    sections.append(Section("Environment", tables=environment))
    data, rows = samples_csv(records)
    if rows:
        sampled = sum(1 for r in records if r.samples_ms)
        sections.append(Section("Raw timing samples", [
            f"The per-call times behind every latency figure: {rows:,} calls of {sampled} timed cell(s), one "
            "row per call (the cell, the record's stride and the call's index among all timed calls, its "
            "milliseconds). Records keep at most 1,000 calls each, every k-th call when more were timed.",
            *([f"{sum(1 for r in records if r.status == 'ok' and not r.samples_ms)} timed cell(s) have no raw "
               "samples (older records, or a timer that reports only a summary)."]
              if any(r.status == "ok" and not r.samples_ms for r in records) else [])],
            attachments=[Attachment(SAMPLES_NAME, data, "text/csv",
                                    "raw per-call latencies of every timed cell, CSV")]))
    if published:
        rest = [d for d in all_datasets if d.id not in used]
        if rest:
            sections.append(Section("Published reference figures",
                                    ["Figures from the public write-ups for models not measured here; "
                                     f"{pub.MARK}."], [pub.table(d) for d in rest]))
    sections.append(Section("How these numbers were taken", [
        "Each record is one (model, target, precision, batch size, machine) cell written by `vlc bench`: "
        "the model exported once, compiled per target and precision, checked against the reference model, "
        "then timed after warm-up with synchronisation (each model's timing table gives the calls timed, "
        "warm-up, threads and spread of every cell).",
        "Speed-ups are ratios of median latencies at the same batch size, with a 95% bootstrap interval "
        "from the raw per-call times of both cells. Achieved TFLOP/s = FLOPs per "
        "sample x throughput; share of peak divides by the dense peak of the device at the cell's precision "
        "(table in vlc/report/device_peaks.json, with sources; the CPU peak is an estimate).",
        "Rows and tables marked 'published, not measured by vlc' reproduce figures from public write-ups "
        "for comparison only."]))
    machines = sorted({r.machine for r in records})
    intro = [f"{len(records)} records · {len(views)} model(s) · {len(machines)} machine(s): {', '.join(machines)}",
             f"Generated by vlc {vlc.__version__} on "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} from {', '.join(sources) or 'records'}."]
    intro += list(notes)
    return Document("vlc cross-hardware report", intro, sections)


def _choose_baseline(view: ModelView, spec: BaselineSpec | None) -> tuple[Column | None, str]:
    if spec is None:
        column = _default_baseline([c for c in view.columns if view.measured(c)], view.kinds)
        return column, "default baseline: torch fp32, on CPU when measured (choose with --baseline)"
    matches = [c for c in view.columns if view.measured(c) and spec.matches(c, view.kinds.get(c, ""))]
    if len(matches) > 1:
        raise InputError(f"--baseline '{spec.text}' matches {len(matches)} columns of {view.model}: "
                         f"{'; '.join(view.labels[c] for c in matches)}",
                         fix="add the precision and a device (or machine) name to pick one")
    return (matches[0] if matches else None), f"baseline chosen with --baseline {spec.text}"
