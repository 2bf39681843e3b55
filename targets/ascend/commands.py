"""`vlc ascend emit` and `vlc ascend import`: bundles for machines with an Ascend toolkit."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vlc.cli import console
from vlc.cli.debug_cmd import print_report
from vlc.cli.options import build_spec
from vlc.errors import InputError
from vlc.outdir import check_output_file, claim_output_dir
from vlc.plugin_manager import get_target
from vlc.records import write_record

ascend_app = typer.Typer(help="Ascend bundles: emit for a machine with the CANN toolkit, import its results.",
                         no_args_is_help=True)


@ascend_app.command("emit")
def emit(
    model: str = typer.Argument(..., help="Example name (name@test), file.py:factory, or an .onnx file."),
    directory: Path = typer.Argument(..., help="Bundle directory to write."),
    target: str = typer.Option("ascend310p", "--target", "-t", help="ascend310 or ascend310p."),
    precision: str = typer.Option("fp16", "--precision", "-p", help="fp16 or fp32."),
    preset: str | None = typer.Option(None, "--preset", help="SoC preset, e.g. Ascend310P3."),
    shapes: list[str] = typer.Option([], "--shapes", help="name:shape of one input; repeatable."),
    batch: str | None = typer.Option(None, "--batch", help="Batch sizes N or MIN,OPT,MAX."),
    option: list[str] = typer.Option([], "-O", "--option", help="Target option key=value; repeatable."),
) -> None:
    """Write a self-contained bundle: patched ONNX, atc and ais_bench scripts, inputs, references."""
    claim_output_dir(directory, "bundle", option="directory")  # before the (slow) front end
    tgt = get_target(target)
    spec = build_spec(tgt, precision, preset, shapes, batch, option)
    from vlc.frontend.pipeline import prepare  # local: startup
    from vlc.targets.ascend.bundle import emit_bundle  # local: startup

    out = emit_bundle(prepare(model), spec, directory, target=tgt)
    console.out.print(f"wrote {out}: run compile.sh, run.sh and profile.sh on an Ascend machine, then "
                      f"`vlc ascend import {out}`", highlight=False)


@ascend_app.command("import")
def import_(
    directory: Path = typer.Argument(..., help="A bundle after its scripts ran."),
    json_out: bool = typer.Option(False, "--json", help="Print one record per batch as JSON."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write the JSON records here."),
    results_dir: Path | None = typer.Option(None, "--results", help="Write one bench record per timed "
                                               "batch into this results directory, for `vlc report`."),
    machine: str | None = typer.Option(None, "--machine", help="Machine name in those records (default: "
                                          "the host name profile.sh recorded)."),
    html: Path | None = typer.Option(None, "--html", help="After dump.sh: write the per-op comparison with its "
                                        "plot along the graph (one page per dumped batch: PAGE, or "
                                        "PAGE-bs<N>.html when there are several)."),
    row_limit: int = typer.Option(40, "--rows", help="Rows of the per-op table to print; 0 for every tensor."),
) -> None:
    """Read a bundle's outputs and timings back: accuracy against ONNX Runtime, NPU compute time; after
    dump.sh, every dumped op against the compiled graph in ONNX Runtime and the first divergent node."""
    if output is not None:
        check_output_file(output)
    if html is not None and html.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--html {html} does not end in .html", fix="name the page report.html")
    if results_dir is not None:
        claim_output_dir(results_dir, "results", option="--results")
    from vlc.targets.ascend.bundle import import_results  # local: startup
    from vlc.targets.ascend.imported import bench_records  # local: startup

    results = import_results(directory)
    bench = []
    if results_dir is not None:
        bench = bench_records(results, machine)  # every record is built before any is written
        if not bench:
            raise InputError(f"{directory} has no timings to record", where=", ".join(results.missing) or None,
                             fix="run its profile.sh (and run.sh for accuracy) on the Ascend machine first")
    reports = results.compare()
    records = []
    for batch in sorted(set(results.reference)):
        profile = results.profiles.get(batch)
        accuracy = reports.get(batch)
        records.append({"target": results.meta["target"], "soc_version": results.meta["soc_version"],
                        "precision": results.meta["precision"], "batch": batch,
                        "source": results.meta["source"]["ref"], "bundle": str(directory),
                        "accuracy": accuracy.to_json() if accuracy else None,
                        "profile": profile.to_json() if profile else None})
    layerwise = results.layerwise() if results.dumps else {}
    pages = _pages(html, sorted(layerwise)) if html is not None else {}
    for path in pages.values():
        check_output_file(path, option="--html")
    if output is not None:
        output.write_text(json.dumps(records, indent=2, default=str) + "\n")
    if results_dir is not None:
        claim_output_dir(results_dir, "results", option="--results", create=True)
        for record in bench:
            write_record(results_dir, record)
        console.info(f"wrote {len(bench)} record(s) to {results_dir}; `vlc report {results_dir}` merges them "
                     "with other machines' results")
    if pages:
        from vlc.debug.html import write_html  # local: loads onnx

        for batch, path in pages.items():
            write_html(layerwise[batch], path)
            console.info(f"wrote {path}")
    if json_out:
        console.emit_json({"records": records, "missing": results.missing,
                           "layerwise": [{"batch": batch, **report.to_json()} for batch, report in layerwise.items()]})
        return
    rows = []
    for r in records:
        acc, prof = r["accuracy"], r["profile"]
        rows.append([r["batch"], "—" if acc is None else ("pass" if acc["passed"] else "FAIL"),
                     None if acc is None else min(o["cosine"] for o in acc["outputs"]),
                     None if prof is None else prof["latency_ms"]["median"],
                     None if prof is None else prof["throughput_per_s"]])
    console.table(f"{results.meta['target']} {results.meta['soc_version']} bundle {directory}",
                  ["batch", "accuracy", "min cosine", "NPU median ms", "samples/s"], rows)
    for item in results.missing:
        console.info(f"missing: {item}")
    if layerwise:
        for batch, report in layerwise.items():
            console.out.print(f"\nper-op comparison of the dump at batch {batch}:", highlight=False)
            print_report(report, row_limit)


def _pages(html: Path, batches: list[int]) -> dict[int, Path]:
    """One page per dumped batch: the given name for one, NAME-bs<N>.html for several."""
    if len(batches) == 1:
        return {batches[0]: html}
    return {b: html.with_name(f"{html.stem}-bs{b}{html.suffix}") for b in batches}
