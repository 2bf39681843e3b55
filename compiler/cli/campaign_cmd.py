"""`vlc campaign run FILE [--cluster ADDRESS] [--report]`: one campaign file, every machine."""

from __future__ import annotations

from pathlib import Path

import typer

from vlc.cli import console
from vlc.cli.bench_cmd import CellsFailed, _claim_outputs, _mark_outputs
from vlc.outdir import claim_output_dir


def _progress_printer(bar: object, title: str):
    task = bar.task_ids[0]  # type: ignore[attr-defined]
    logged = [0]

    def progress(text: str, done: int, total: int) -> None:
        bar.update(task, description=f"{title} [{done}/{total}]: {text}",  # type: ignore[attr-defined]
                   total=total or None, completed=done)
        if done > logged[0] and not console.err.is_terminal:  # logs: one line per finished record
            logged[0] = done
            console.info(f"[{done}/{total}] {text}")

    return progress


def write_report(results: Path, output: Path, *, baseline: str | None, published: bool) -> Path:
    """`vlc report RESULTS -o OUTPUT` of the campaign's results."""
    from vlc.report import make_report  # local: startup

    return make_report([results], output, baseline=baseline, published=published)[0]


def register(app: typer.Typer) -> None:
    campaign_app = typer.Typer(help="Cross-hardware campaigns: one TOML file of runs, every machine, one report.",
                               no_args_is_help=True)
    app.add_typer(campaign_app, name="campaign")

    @campaign_app.command("run")
    def run(
        file: Path = typer.Argument(..., help="Campaign file (TOML): results, report options, run tables."),
        cluster: str | None = typer.Option(None, "--cluster", help="Ray cluster address (HEAD:PORT, from "
                                              "`vlc worker start --head`); each cell runs on a node offering "
                                              "its run's `requires`. Default: every cell on this machine."),
        report: bool = typer.Option(False, "--report", help="Write the campaign's report at the end (the "
                                    "file's `report`, default report.html beside the results)."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary of the records."),
    ) -> None:
        """Run every run table of FILE: here through `vlc bench`, or one Ray task per cell on a cluster."""
        from vlc.campaign import load_campaign, run_cluster, run_local  # local: startup
        from vlc.campaign.runner import import_ray  # local: startup

        campaign = load_campaign(file)
        if cluster is not None:
            import_ray()  # the install hint before anything else
        if cluster is None:
            outputs = _claim_outputs(campaign.results, campaign.artifacts, None)
        else:  # artifacts are built on the nodes, in their own cache: only the results are written here

            outputs = [(claim_output_dir(campaign.results, "results", option="results"), "results")]
        title = f"campaign {file.name}" + (f" on {cluster}" if cluster else "")
        with console.progress(title) as bar:
            progress = _progress_printer(bar, title)
            try:
                summary = run_local(campaign, progress) if cluster is None else run_cluster(campaign, cluster, progress)
            finally:
                _mark_outputs(outputs)
        records = summary.written + summary.skipped
        if json_out:
            console.emit_json({"results": str(summary.results), "written": len(summary.written),
                               "skipped": len(summary.skipped),
                               "cells": [{"model": r.model, "target": r.target, "precision": r.precision,
                                          "batch": r.batch, "machine": r.machine, "node": r.node,
                                          "status": r.status, "median_ms": r.median_ms, "reason": r.reason,
                                          "skipped": r in summary.skipped} for r in records]})
        else:
            rows = [[r.model, r.target, r.precision, r.batch, r.machine, r.status, r.median_ms,
                     "—" if r.accuracy is None else ("pass" if r.accuracy.passed else "FAIL"),
                     ("earlier run" if r in summary.skipped else "") or r.reason]
                    for r in records]
            console.table(f"campaign {file.name}: median latency in ms per call",
                          ["model", "target", "precision", "batch", "machine", "status", "median ms",
                           "accuracy", "note"], rows)
            console.out.print(f"{len(summary.written)} record(s) written to {summary.results}, "
                              f"{len(summary.skipped)} already done", highlight=False)
        if report:
            output = campaign.report or campaign.results.parent / "report.html"
            with console.progress(f"building the report from {summary.results}"):
                written = write_report(summary.results, output, baseline=campaign.baseline,
                                       published=campaign.published)
            console.info(f"wrote {written}")
        if summary.failed:
            raise CellsFailed(f"{len(summary.failed)} of {len(summary.written)} record(s) failed",
                              where=str(summary.results),
                              fix="the 'failed' rows say why; fix it and rerun: finished cells are skipped")
