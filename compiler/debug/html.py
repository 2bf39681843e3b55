"""The layer-wise report as one self-contained HTML page: a plot of cosine and relative error
along the graph (matplotlib, inlined PNG) and the table of compared tensors, in the report's style."""

from __future__ import annotations

import math
from pathlib import Path

from vlc.debug.layerwise import LayerwiseReport, TensorComparison
from vlc.errors import InputError
from vlc.outdir import check_output_file
from vlc.report.document import Cell, Document, Figure, Section, Table
from vlc.report.format import fmt
from vlc.report.plots import _png, _pyplot, _text
from vlc.report.render import to_html


def plot_along_graph(report: LayerwiseReport) -> bytes:
    """Cosine (top) and relative error (bottom, log) per compared tensor, failures in red, the
    first divergent node marked."""
    plt = _pyplot()
    xs = list(range(len(report.nodes)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    cosines = [c.cosine if math.isfinite(c.cosine) else float("nan") for c in report.nodes]
    errors = [max(c.rel_error, 1e-12) if math.isfinite(c.rel_error) else float("nan") for c in report.nodes]
    for ax, values in ((top, cosines), (bottom, errors)):
        ax.plot(xs, values, color="#2f6fb0", linewidth=1, marker="o", markersize=2.5)
        bad = [(x, v) for x, v, c in zip(xs, values, report.nodes) if not c.passed]
        if bad:
            ax.scatter(*zip(*bad), color="#a4161a", s=12, zorder=3, label="outside tolerance")
        ax.grid(True, alpha=.3)
    top.axhline(report.tolerance.min_cosine, color="#7a8591", linestyle="--", linewidth=.8,
                label=f"min cosine {report.tolerance.min_cosine}")
    top.set_ylabel("cosine")
    bottom.set_yscale("log")
    bottom.set_ylabel("relative error ‖c−r‖/‖r‖")
    bottom.set_xlabel("compared tensor, in topological order")
    first = report.first_divergent
    if first is not None:
        x = report.nodes.index(first)
        for ax in (top, bottom):
            ax.axvline(x, color="#b7791f", linewidth=1)
        top.annotate(_text(f"first divergent: {first.node} ({first.op_type})"), (x, top.get_ylim()[0]),
                     xytext=(4, 4), textcoords="offset points", fontsize=8, color="#7b4a00")
    top.legend(fontsize=8, loc="lower left")
    fig.suptitle(_text(f"{report.candidate} against {report.reference}"), fontsize=10)
    return _png(fig)


def _number(value: float | None) -> str:
    return "-" if value is None else fmt(value)


def _row(c: TensorComparison) -> list[Cell]:
    verdict = Cell("pass", "pass") if c.passed else Cell("FAIL", "fail", c.reason)
    return [Cell(str(c.index)), Cell(c.node), Cell(c.op_type), Cell(c.output), Cell(_number(c.cosine)),
            Cell(_number(c.max_abs)), Cell(_number(c.mean_abs)), Cell(_number(c.median_abs)),
            Cell(_number(c.max_rel)), Cell(_number(c.rel_error)), Cell(_number(c.growth)), verdict]


HEADER = ["#", "node", "op", "tensor", "cosine", "max abs", "mean abs", "median abs", "max rel",
          "rel error", "growth", "result"]


def document(report: LayerwiseReport) -> Document:
    first = report.first_divergent
    tol = ", ".join(f"{k} {v}" for k, v in report.tolerance.to_json().items() if v is not None)
    intro = [f"Reference: {report.reference}", f"Candidate: {report.candidate}", f"Tolerance: {tol}",
             f"{len(report.nodes)} tensors compared in {report.runs} ONNX Runtime runs "
             f"(at most {report.window} exposed per run)"]
    summary = (f"First divergent node: {first.node} ({first.op_type}), tensor {first.output}: "
               f"cosine {_number(first.cosine)}, max abs {_number(first.max_abs)}, "
               f"growth {_number(first.growth)}. {first.reason}" if first is not None
               else "Every compared tensor is within tolerance.")
    section = Section("Error along the graph", paragraphs=[summary, *report.notes],
                      figures=[Figure("along-graph", plot_along_graph(report),
                                      "Cosine and relative error per compared tensor; red: outside tolerance")])
    rows = [_row(c) for c in report.nodes]
    css = ["baseline" if c is first else "" for c in report.nodes]
    table = Table("Compared tensors", HEADER, rows, row_css=css, align="rllll" + "r" * 7,
                  notes=["growth: the tensor's relative error over the worst relative error of its node's "
                         "inputs ('-' where the inputs are exact)"])
    return Document("Layer-wise accuracy", intro, [section, Section("Tensors", tables=[table])])


def write_html(report: LayerwiseReport, path: Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--html {path} does not end in .html", fix="name the page report.html")
    check_output_file(path, option="--html")
    path.write_text(to_html(document(report)), encoding="utf-8")
    return path
