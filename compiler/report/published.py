"""Published reference figures (compiler/report/published.json) as clearly marked tables.

These numbers come from public write-ups; vlc never measured them. Every table built here
carries css "published" and a title that says so, in HTML and in Markdown.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from vlc.report.document import Cell, Table
from vlc.report.format import ms, per_s

MARK = "published, not measured by vlc"


@dataclass(frozen=True)
class Dataset:
    id: str
    model: str
    match: tuple[str, ...]
    source: str
    metric: str  # latency_ms or throughput_per_s
    columns: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]
    accuracy: tuple[dict[str, Any], ...]

    def matches(self, model_name: str) -> bool:
        name = model_name.lower()
        return any(re.search(pattern, name) for pattern in self.match)

    def label(self, column: dict[str, Any]) -> str:
        return f"{column['target']} / {column['precision']} / {column['device']}"

    def series(self) -> list[tuple[str, list[tuple[int, float]]]]:
        """(label, [(batch, samples/s)]) for plotting beside measured throughput."""
        out = []
        for column in self.columns:
            points = []
            for batch, value in column["values"].items():
                b = int(batch)
                points.append((b, value if self.metric == "throughput_per_s" else b * 1000.0 / value))
            out.append((self.label(column), sorted(points)))
        return out


@cache
def datasets() -> tuple[Dataset, ...]:
    data = json.loads(resources.files("vlc.report").joinpath("published.json").read_text())
    return tuple(Dataset(d["id"], d["model"], tuple(d["match"]), d["source"], d["metric"],
                         tuple(d["columns"]), tuple(d.get("notes", [])), tuple(d.get("accuracy", [])))
                 for d in data["datasets"])


def table(dataset: Dataset) -> Table:
    """Rows: batch size; columns: target / precision / device; cells: latency ms and throughput."""
    batches = sorted({int(b) for c in dataset.columns for b in c["values"]})
    rows, row_css = [], []
    for batch in batches:
        row = [Cell(f"{batch} ({MARK})")]
        for column in dataset.columns:
            value = column["values"].get(str(batch))
            if value is None:
                row.append(Cell("—", "na"))
            elif dataset.metric == "latency_ms":
                row.append(Cell(f"{ms(value)} · {per_s(batch * 1000.0 / value)}"))
            else:
                row.append(Cell(f"{ms(batch * 1000.0 / value)} · {per_s(value)}"))
        rows.append(row)
        row_css.append("published")
    given = "latency" if dataset.metric == "latency_ms" else "throughput"
    notes = [f"Source: {dataset.source}.",
             f"The write-up gives {given}; the other figure is derived from it (throughput = batch / latency)."]
    return Table(f"Published reference rows: {dataset.model}",
                 ["batch"] + [dataset.label(c) for c in dataset.columns], rows,
                 notes + list(dataset.notes), css="published", row_css=row_css)
