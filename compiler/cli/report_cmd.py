"""`vlc report RESULTS... -o report.html|report.md`: merge bench records from any machines."""

from __future__ import annotations

from pathlib import Path

import typer

from vlc.cli import console
from vlc.outdir import check_output_file


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        results: list[Path] = typer.Argument(..., help="Result directories (or record files) written by "
                                             "`vlc bench --results DIR`, from any number of machines."),
        output: Path = typer.Option(..., "-o", "--output", help="report.html (one self-contained file, "
                                    "plots inlined) or report.md (PNG plots written beside it)."),
        baseline: str | None = typer.Option(None, help="Column to compare against, TARGET/PRECISION/DEVICE "
                                               "(device: a substring of the device or machine name, or cpu/cuda); "
                                               "default: torch fp32, on CPU when measured."),
        published: bool = typer.Option(False, "--published", help="Add the write-ups' published figures as "
                                       "reference rows, marked 'published, not measured by vlc'."),
        no_plots: bool = typer.Option(False, "--no-plots", help="Tables only (no matplotlib needed)."),
        json_out: bool = typer.Option(False, "--json", help="Print the files written as JSON."),
    ) -> None:
        """Tables (latency, throughput, speed-up, utilisation, accuracy, environment) and plots."""
        from vlc.records import load_records  # local: startup
        from vlc.report.build import build  # local: startup
        from vlc.report.render import check_output, write  # local: startup

        check_output(output)
        check_output_file(output)
        sources = [str(p) for p in results]
        loaded = load_records(sources)
        for note in loaded.replaced:
            console.info(f"note: {note}")
        with console.progress(f"building the report from {len(loaded.records)} records"):
            doc = build(loaded.records, baseline=baseline, published=published, plots=not no_plots,
                        sources=sources, notes=loaded.replaced)
            written = write(doc, output)
        machines = sorted({r.machine for r in loaded.records})
        if json_out:
            console.emit_json({"files": [str(p) for p in written], "records": len(loaded.records),
                               "machines": machines})
            return
        console.out.print(f"wrote {written[0]} ({len(loaded.records)} records from {len(machines)} "
                          f"machine(s): {', '.join(machines)})"
                          + (f" and {len(written) - 1} file(s) beside it (plots, raw samples)"
                             if len(written) > 1 else ""))
