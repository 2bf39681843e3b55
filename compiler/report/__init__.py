"""Cross-machine reports from bench records: tables, plots, accuracy, environments.

    from vlc.report import make_report
    make_report(["results/", "other-machine/"], "report.html", baseline="torch/fp32/cpu")

Data files: device_peaks.json (dense peaks with sources) and published.json (the write-ups'
figures, always shown as "published, not measured by vlc").
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def make_report(results: Iterable[str | Path], out: str | Path, *, baseline: str | None = None,
                published: bool = False, plots: bool = True) -> list[Path]:
    """Merge the records under `results` and write the report; return the files written."""
    from vlc.outdir import check_output_file  # local: startup
    from vlc.records import load_records  # local: startup
    from vlc.report.build import build  # local: startup
    from vlc.report.render import check_output, write  # local: startup

    check_output(Path(out))  # before any work: a bad file name is the cheapest error
    check_output_file(out)
    sources = [str(p) for p in results]
    loaded = load_records(sources)
    doc = build(loaded.records, baseline=baseline, published=published, plots=plots,
                sources=sources, notes=loaded.replaced)
    return write(doc, Path(out))
