"""`vlc export MODEL -o out.onnx`: the front end on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vlc.cli import console
from vlc.cli.options import (
    CacheDirOpt,
    ExporterOpt,
    ModelArg,
    NoParityOpt,
    NoSimplifyOpt,
    OpsetOpt,
    PassesOpt,
    WeightsOpt,
)
from vlc.errors import InputError
from vlc.onnx_files import copy_onnx
from vlc.outdir import check_output_file, current_umask


def frontend_options(exporter: str, opset: int | None, passes: str | None, no_simplify: bool,
                     no_parity: bool, weights: str | None) -> Any:
    from vlc.frontend.pipeline import FrontendOptions  # local: startup

    return FrontendOptions(exporter=exporter, opset=opset, simplify=not no_simplify,
                           passes=None if passes is None else tuple(filter(None, passes.split(","))),
                           parity=not no_parity, weights=weights)


def print_frontend_report(report: dict[str, Any]) -> None:
    """Node counts per stage and pass, and the parity table."""
    if report.get("cache_note"):
        console.info(report["cache_note"])
    if report.get("reused"):
        console.info("front end: reused the cached normalized graph")
    rows = [[s["name"], s["nodes"], s["seconds"]] for s in report.get("stages", [])]
    rows += [[f"pass {p['name']}", f"{p['nodes_before']} -> {p['nodes_after']}", p["seconds"]]
             for p in report.get("passes", [])]
    console.table(f"front end (exporter: {report.get('exporter') or 'none, ONNX input'}; "
                  f"simplifier: {report.get('simplifier', 'off')})", ["stage", "nodes", "seconds"], rows)
    if inputs := report.get("inputs"):
        console.info(f"inputs derived from the graph: {inputs['how']}")
    if parity := report.get("parity"):
        if parity.get("skipped"):
            console.info(f"parity with the original file: skipped, {parity['skipped']}")
        elif report.get("exporter"):
            print_accuracy("parity: ONNX Runtime (CPU, fp32) vs PyTorch", parity)
        else:
            print_accuracy(f"parity: normalized graph vs {parity['reference']}, batch {parity['batch']}", parity)


def print_accuracy(title: str, accuracy: dict[str, Any]) -> None:
    rows = [[o["name"], o["max_abs"], o["mean_abs"], o["median_abs"], o["max_rel"], o["mean_rel"],
             o["median_rel"], o["cosine"], o["ref_std"],
             (f"pass ({o['note']})" if o.get("note") else "pass") if o["passed"] else f"FAIL: {o['reason']}"]
            for o in accuracy["outputs"]]
    console.table(title, ["output", "max abs", "mean abs", "median abs", "max rel", "mean rel",
                          "median rel", "cosine", "ref std", "result"], rows)


def check_export_output(dst: Path, model: str) -> None:
    """An .onnx file name, not a directory, not below a file, not the model being exported."""

    if dst.suffix.lower() != ".onnx":
        raise InputError(f"output {dst} does not end in .onnx", fix="name the output file *.onnx")
    check_output_file(dst)
    if Path(model).is_file() and dst.is_file() and Path(model).samefile(dst):
        raise InputError(f"-o {dst} is the model being exported", fix="write the normalized graph to another file")


def copy_graph(src: Path, dst: Path) -> None:
    """Copy an ONNX file and all its external data to `dst` (the .onnx file last, atomically)."""

    if dst.suffix.lower() != ".onnx":
        raise InputError(f"output {dst} does not end in .onnx", fix="name the output file *.onnx")
    copy_onnx(src, dst)


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        model: ModelArg,
        output: Path = typer.Option(..., "-o", "--output", help="Where to write the normalized .onnx."),
        exporter: ExporterOpt = "auto",
        opset: OpsetOpt = None,
        passes: PassesOpt = None,
        no_simplify: NoSimplifyOpt = False,
        no_parity: NoParityOpt = False,
        weights: WeightsOpt = None,
        cache_dir: CacheDirOpt = None,
        json_out: bool = typer.Option(False, "--json", help="Print a JSON report."),
    ) -> None:
        """Export a model to one normalized ONNX graph, with a parity check against PyTorch."""
        check_export_output(output, model)  # before the (slow) front end
        options = frontend_options(exporter, opset, passes, no_simplify, no_parity, weights)
        from vlc.frontend.pipeline import prepare  # local: startup

        with console.progress(f"exporting {model}"):
            source = prepare(model, cache_dir=cache_dir, options=options)
        copy_graph(source.onnx_path, output)
        output.chmod(0o666 & ~current_umask())  # a new file's mode, not the cache's or a temp file's 0600
        report = {**source.frontend, "output": str(output)}
        if json_out:
            console.emit_json(report)
            return
        print_frontend_report(report)
        console.out.print(f"wrote {output}")
