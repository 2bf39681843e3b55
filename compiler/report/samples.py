"""The raw timing samples of a report's records as one CSV file, one row per kept call.

Columns: the cell (model, target, precision, batch, machine, node, device), whether the timing
includes transfers, the record's stride (every k-th call was kept) and the call's index among
all the timed calls, then its milliseconds. A spreadsheet or pandas reads it as it is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from vlc.records import BenchRecord

NAME = "samples.csv"
COLUMNS = ("model", "target", "precision", "batch", "machine", "node", "device", "includes_transfers",
           "stride", "call", "ms")


def samples_csv(records: Iterable[BenchRecord]) -> tuple[bytes, int]:
    """(the CSV's bytes, rows written); records without samples are left out."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    rows = 0
    for r in sorted(records, key=lambda r: (r.model_id, r.machine, r.target, r.precision, r.batch)):
        kept = r.samples_ms or {}
        stride = kept.get("stride", 1)
        transfers = "" if r.includes_transfers is None else "yes" if r.includes_transfers else "no"
        for i, value in enumerate(kept.get("values") or []):
            writer.writerow([r.model_id, r.target, r.precision, r.batch, r.machine, r.node, r.device, transfers,
                             stride, i * stride, repr(float(value))])
            rows += 1
    return buffer.getvalue().encode("utf-8"), rows
