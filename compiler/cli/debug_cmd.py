"""`vlc debug accuracy REFERENCE CANDIDATE`: where in the graph a candidate leaves its reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vlc.cli import console
from vlc.cli.compare_cmd import cosine_text
from vlc.errors import InputError

debug_app = typer.Typer(help="Find where accuracy is lost.", no_args_is_help=True)

# Rows printed along the graph by default: evenly spread, plus those around the first divergent.
DEFAULT_ROWS = 40
_CONTEXT = 3


def table_rows(report: Any, limit: int) -> list[Any]:
    """The comparisons to print: all when they fit in `limit` (0: no limit), else an even spread
    along the graph plus the first divergent tensor and its neighbours."""
    nodes = report.nodes
    if limit <= 0 or len(nodes) <= limit:
        return list(nodes)
    keep: set[int] = {round(i * (len(nodes) - 1) / max(1, limit - 2 * _CONTEXT - 2)) for i in
                      range(max(1, limit - 2 * _CONTEXT - 1))}
    keep.add(len(nodes) - 1)  # the graph's output end
    first = report.first_divergent
    if first is not None:
        at = nodes.index(first)
        keep |= set(range(max(0, at - _CONTEXT), min(len(nodes), at + _CONTEXT + 1)))
    return [nodes[i] for i in sorted(keep)]


def _cosine(value: float) -> str:
    return cosine_text(value)


def print_report(report: Any, rows: int) -> None:
    shown = table_rows(report, rows)
    first = report.first_divergent
    tol = ", ".join(f"{k} {v}" for k, v in report.tolerance.to_json().items() if v is not None)
    title = (f"{report.candidate} vs {report.reference}; tolerance: {tol}; {len(report.nodes)} tensors "
             f"compared in {report.runs} runs" + (f" (showing {len(shown)}; --rows 0 for all)"
                                                  if len(shown) < len(report.nodes) else ""))
    table = [[c.index, c.node, c.op_type, _cosine(c.cosine), c.max_abs, c.mean_abs, c.median_abs, c.max_rel,
              c.rel_error, "-" if c.growth is None else c.growth,
              ("FIRST " if c is first else "") + ("pass" if c.passed else "FAIL")] for c in shown]
    console.table(title, ["#", "node", "op", "cosine", "max abs", "mean abs", "median abs", "max rel",
                          "rel error", "growth", "result"], table)
    for note in report.notes:
        console.info(f"note: {note}")
    if first is None:
        console.out.print("no divergence: every compared tensor is within tolerance", highlight=False)
    else:
        growth = "-" if first.growth is None else console.fmt(first.growth)
        console.out.print(f"first divergent node: {first.node} ({first.op_type}) output {first.output}: "
                          f"cosine {_cosine(first.cosine)}, max abs {console.fmt(first.max_abs)}, "
                          f"growth {growth} — {first.reason}", highlight=False)
        if first.covers and len(first.covers) > 1:
            console.out.print(f"  computed by the candidate's fused op {first.candidate_tensor} covering "
                              f"{', '.join(first.covers)}", highlight=False)


@debug_app.command("accuracy")
def accuracy(
    reference: str = typer.Argument(..., metavar="REFERENCE", help="The reference: an .onnx file, an artifact "
                                    "directory or a model ref (normalized through the front end)."),
    candidate: str = typer.Argument(..., metavar="CANDIDATE", help="The candidate, in the same forms (e.g. the "
                                    "fp16 or int8 artifact of the same model)."),
    inputs: list[str] = typer.Option([], "--input", "-i", help="Input files (as for `vlc run`); default: "
                                     "generated with spread."),
    batch: int = typer.Option(1, "--batch", "-b", help="Batch of generated inputs."),
    seed: int = typer.Option(0, "--seed", help="Seed of generated inputs."),
    window: int | None = typer.Option(None, "--window", help="Tensors exposed per run of each graph at "
                                         "most; bounds memory (default 64, fewer when they would hold over "
                                         "1 GiB; with --bisect, 1)."),
    bisect: bool = typer.Option(False, "--bisect", help="Find the first divergent tensor by bisection (O(log n) "
                                "runs marking --window tensors each) instead of comparing every tensor."),
    rebuild: bool | None = typer.Option(None, "--rebuild/--no-rebuild", help="With --bisect and an artifact: "
                                           "probe the compiled file itself, rebuilding it with the marked tensors "
                                           "as extra outputs through its target (default for TensorRT engines and "
                                           "Ascend .om files, whose intermediates cannot be exposed)."),
    atol: float | None = typer.Option(None, "--atol", help="Absolute tolerance (default per precision)."),
    rtol: float | None = typer.Option(None, "--rtol", help="Relative tolerance (default per precision)."),
    min_cosine: float | None = typer.Option(None, "--min-cosine", help="Minimum cosine similarity."),
    rows: int = typer.Option(DEFAULT_ROWS, "--rows", help="Table rows to print; 0 for every tensor."),
    html: Path | None = typer.Option(None, "--html", help="Write a page with the plot along the graph."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Front-end cache for model refs."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Compare every intermediate tensor of CANDIDATE with REFERENCE in ONNX Runtime; name the first divergent node."""
    from vlc.debug import DEFAULT_WINDOW, debug_accuracy  # local: loads onnx

    if inputs and batch != 1:
        raise InputError("--batch applies to generated inputs, not to --input files",
                         fix="drop --batch; the files' first axis is the batch")
    if html is not None and html.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--html {html} does not end in .html", fix="name the page report.html")
    size = window if window is not None else (1 if bisect else DEFAULT_WINDOW)
    with console.progress("comparing tensors along the graph"):
        report = debug_accuracy(reference, candidate, inputs=inputs, batch=batch, seed=seed, window=size,
                                bisect=bisect, min_cosine=min_cosine, atol=atol, rtol=rtol, cache_dir=cache_dir,
                                rebuild=rebuild)
    if html is not None:
        from vlc.debug.html import write_html  # local: loads onnx

        write_html(report, html)
        console.info(f"wrote {html}")
    if json_out:
        console.emit_json(report.to_json())
    else:
        print_report(report, rows)


def register(app: typer.Typer) -> None:
    app.add_typer(debug_app, name="debug")
