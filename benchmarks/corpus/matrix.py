"""Run every corpus model through vlc's paths with the real CLI and print the producer x path matrix.

Each cell is one or more `vlc` subprocesses with a timeout and no flags beyond the model file
(and the output directory). Paths:
  frontend      vlc export FILE -o ...                      (front end + parity)
  ort-compile   vlc compile FILE --target onnxruntime
  ort-run       vlc run ARTIFACT
  ort-compare   vlc compare ARTIFACT --input FEEDS --expected OUTS, where OUTS come from the
                untouched original file in ONNX Runtime on the same FEEDS
  trt-fp32      vlc compile FILE --target trt-rtx --preset a10
  trt-fp16      vlc compile FILE --target trt-rtx --preset a10 --precision fp16
  ascend-emit   vlc compile FILE --target ascend310p --emit DIR, then every patched graph of the
                bundle against the untouched original in ONNX Runtime on the bundle's inputs
  ascend-check  vlc check FILE --target ascend310p

Usage:
    python benchmarks/corpus/matrix.py [--corpus DIR] [--only NAME,..] [--producers P,..]
                                       [--paths P,..] [--out benchmarks/results/corpus]
                                       [--label NAME] [--timeout 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from build_corpus import corpus_dir, load_manifest  # noqa: E402 (the folder is put on sys.path above)

PATHS = ("frontend", "ort-compile", "ort-run", "ort-compare", "trt-fp32", "trt-fp16",
         "ascend-emit", "ascend-check")


def vlc_bin() -> str:
    """$VLC_BIN (e.g. a launcher of another checkout), else the checkout's venv, else PATH."""
    if os.environ.get("VLC_BIN"):
        return os.environ["VLC_BIN"]
    venv = REPO / ".venv" / "bin" / "vlc"
    return str(venv) if venv.exists() else (shutil.which("vlc") or "vlc")


@dataclass
class Cell:
    model: str
    producer: str
    path: str
    passed: bool
    seconds: float
    error: str = ""  # one line; empty when passed
    traceback: bool = False  # a Python traceback reached the user


class CellFailure(Exception):
    def __init__(self, error: str, traceback: bool = False) -> None:
        super().__init__(error)
        self.error, self.traceback = error, traceback


def one_line(text: str) -> str:
    """The line a user reads as the error: the last one naming an error, else the last non-empty."""
    lines = [ln.strip(" │╭╮╰╯─") .strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    for ln in reversed(lines):
        if ln.lower().startswith(("error", "fail")) or "Error" in ln:
            return ln[:300]
    return (lines[-1] if lines else "(no message)")[:300]


def vlc(args: list[str], timeout: int, env: dict[str, str]) -> str:
    """Run `vlc ARGS`; raise CellFailure with its one-line error unless it exits 0."""
    try:
        proc = subprocess.run([vlc_bin(), *args], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=tempfile.gettempdir(), check=False)
    except subprocess.TimeoutExpired:
        raise CellFailure(f"timed out after {timeout} s: vlc {' '.join(args[:3])}") from None
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        message = one_line(proc.stderr) if proc.stderr.strip() else one_line(proc.stdout)
        raise CellFailure(f"rc={proc.returncode}: {message}", "Traceback (most recent call" in out)
    if "Traceback (most recent call" in out:
        raise CellFailure("exit 0 but a traceback was printed", True)
    return out


# ----------------------------------------------------------------------------- numerics

def ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures are reported as the cell's error
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: np.asarray(feeds[n]) for n in names})  # scalars as 0-d arrays


def reference_outputs(model: Path, feeds: dict[str, np.ndarray], work: Path) -> list[np.ndarray]:
    """The untouched original in ONNX Runtime; an opset < 7 file (which ONNX Runtime has no kernels
    for) through onnx's version converter only, as the nearest runnable form of the original."""
    import onnx

    proto = onnx.load(str(model))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 99)
    if opset >= 7:
        return ort_outputs(model, feeds)
    converted = work / "reference-opset11.onnx"
    if not converted.exists():
        listed = {v.name for v in proto.graph.input}
        for init in proto.graph.initializer:  # the converter checks IR 4 rules
            if init.name not in listed:
                proto.graph.input.append(onnx.helper.make_tensor_value_info(
                    init.name, init.data_type, init.dims))
        onnx.save(onnx.version_converter.convert_version(proto, 11), str(converted))
    return ort_outputs(converted, feeds)


def close(got: np.ndarray, want: np.ndarray) -> str | None:
    """None when `got` matches `want` (fp32 tolerance), else why not."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"shape {list(got.shape)} != {list(want.shape)}"
    if want.dtype.kind not in "fc":
        return None if np.array_equal(got, want) else "integer/bool outputs differ"
    g, w = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    if not np.all(np.isfinite(w) == np.isfinite(g)):
        return "non-finite values differ"
    g, w = g[np.isfinite(w)], w[np.isfinite(w)]
    scale = max(float(np.abs(w).max(initial=0.0)), 1e-6)
    err = float(np.abs(g - w).max(initial=0.0))
    return None if err <= 1e-3 * scale + 1e-5 else f"max abs error {err:.3g} (scale {scale:.3g})"


def original_feeds(artifact: Path) -> dict[str, np.ndarray]:
    """The inputs `vlc run` generates for an artifact (same generator, seed 0)."""
    from vlc.artifact import Artifact
    from vlc.frontend.feeds import artifact_inputs

    return artifact_inputs(Artifact.load(artifact))


# ----------------------------------------------------------------------------- cells

def cell_frontend(model: Path, work: Path, t: int, env: dict[str, str]) -> None:
    vlc(["export", str(model), "-o", str(work / "export.onnx")], t, env)


def cell_ort_compile(model: Path, work: Path, t: int, env: dict[str, str]) -> None:
    vlc(["compile", str(model), "--target", "onnxruntime", "-o", str(work / "ort")], t, env)


def _need(path: Path, what: str) -> None:
    if not path.exists():
        raise CellFailure(f"not run: {what} failed")


def cell_ort_run(model: Path, work: Path, t: int, env: dict[str, str]) -> None:
    _need(work / "ort" / "manifest.json", "ort-compile")
    vlc(["run", str(work / "ort")], t, env)


def cell_ort_compare(model: Path, work: Path, t: int, env: dict[str, str]) -> None:
    _need(work / "ort" / "manifest.json", "ort-compile")
    try:
        feeds = original_feeds(work / "ort")
    except Exception as exc:  # noqa: BLE001 - reported as the cell's error
        raise CellFailure(f"generating inputs: {type(exc).__name__}: {exc}") from None
    try:
        want = reference_outputs(model, feeds, work)
    except Exception as exc:  # noqa: BLE001 - the original refuses vlc's inputs
        raise CellFailure(f"the original in ONNX Runtime refuses the inputs: {one_line(str(exc))}") from None
    import onnx

    names = [o.name for o in onnx.load(str(model), load_external_data=False).graph.output]
    np.savez(work / "feeds.npz", **feeds)
    np.savez(work / "expected.npz", **dict(zip(names, want)))
    vlc(["compare", str(work / "ort"), "--input", str(work / "feeds.npz"),
         "--expected", str(work / "expected.npz")], t, env)


def cell_trt(precision: str) -> Callable[[Path, Path, int, dict[str, str]], None]:
    def run(model: Path, work: Path, t: int, env: dict[str, str]) -> None:
        args = ["compile", str(model), "--target", "trt-rtx", "--preset", "a10",
                "-o", str(work / f"trt-{precision}")]
        vlc(args + (["--precision", precision] if precision != "fp32" else []), t, env)
    return run


def cell_ascend_emit(model: Path, work: Path, t: int, env: dict[str, str]) -> None:
    bundle = work / "ascend"
    vlc(["compile", str(model), "--target", "ascend310p", "--emit", str(bundle)], t, env)
    meta = json.loads((bundle / "bundle.json").read_text())
    builds = meta.get("builds") or []
    if not builds:
        raise CellFailure("bundle.json lists no build")
    for build in builds:
        patched = bundle / build["onnx"]
        feeds = _bundle_inputs(bundle / "inputs" / build["name"], patched)
        try:
            got = ort_outputs(patched, feeds)
        except Exception as exc:  # noqa: BLE001
            raise CellFailure(f"{build['onnx']} fails in ONNX Runtime: {one_line(str(exc))}") from None
        try:
            want = reference_outputs(model, feeds, work)
        except Exception as exc:  # noqa: BLE001
            raise CellFailure(f"the original refuses the bundle's inputs: {one_line(str(exc))}") from None
        for i, (g, w) in enumerate(zip(got, want)):
            why = close(g, w)
            if why:
                raise CellFailure(f"{build['onnx']} output {i} differs from the original: {why}")


def _bundle_inputs(folder: Path, patched: Path) -> dict[str, np.ndarray]:
    import onnx

    graph = onnx.load(str(patched), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in inits]
    return {n: np.load(folder / f"in{i}.npy") for i, n in enumerate(names)}


def cell_ascend_check(model: Path, work: Path, t: int, env: dict[str, str]) -> None:
    vlc(["check", str(model), "--target", "ascend310p"], t, env)


CELLS: dict[str, Callable[[Path, Path, int, dict[str, str]], None]] = {
    "frontend": cell_frontend, "ort-compile": cell_ort_compile, "ort-run": cell_ort_run,
    "ort-compare": cell_ort_compare, "trt-fp32": cell_trt("fp32"), "trt-fp16": cell_trt("fp16"),
    "ascend-emit": cell_ascend_emit, "ascend-check": cell_ascend_check,
}


def run_model(entry: dict[str, Any], corpus: Path, paths: list[str], work_root: Path,
              timeout: int, env: dict[str, str]) -> list[Cell]:
    model = corpus / entry["path"]
    work = work_root / entry["name"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cells = []
    for path in paths:
        start = time.perf_counter()
        try:
            CELLS[path](model, work, timeout, env)
            cell = Cell(entry["name"], entry["producer"], path, True, 0.0)
        except CellFailure as exc:
            cell = Cell(entry["name"], entry["producer"], path, False, 0.0, exc.error, exc.traceback)
        except Exception as exc:  # noqa: BLE001 - a harness error is a failing cell, not a crash
            cell = Cell(entry["name"], entry["producer"], path, False, 0.0,
                        f"harness: {type(exc).__name__}: {one_line(str(exc))}")
        cell.seconds = round(time.perf_counter() - start, 2)
        cells.append(cell)
    shutil.rmtree(work, ignore_errors=True)
    return cells


# ----------------------------------------------------------------------------- report

def table(cells: list[Cell], paths: list[str]) -> list[list[str]]:
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for c in cells:
        for key in ((c.producer, c.path), ("all", c.path)):
            counts[key][0] += c.passed
            counts[key][1] += 1
    producers = sorted({c.producer for c in cells}) + ["all"]
    rows = [["producer", "models", *paths]]
    for p in producers:
        models = len({c.model for c in cells if p == "all" or c.producer == p})
        rows.append([p, str(models)] + [f"{counts[(p, x)][0]}/{counts[(p, x)][1]}" for x in paths])
    return rows


def markdown(cells: list[Cell], paths: list[str], meta: dict[str, Any]) -> str:
    rows = table(cells, paths)
    passed = sum(c.passed for c in cells)
    summary = (f"{passed}/{len(cells)} cells pass ({100 * passed / max(len(cells), 1):.1f}%), "
               f"{meta['models']} models, {meta['seconds']:.0f} s, vlc {meta['vlc_version']}, "
               f"{meta['date']}.")
    if meta.get("vlc_bin") and not str(meta["vlc_bin"]).startswith(str(REPO)):
        summary += f" vlc run as `{meta['vlc_bin']}`."
    lines = [f"# Corpus matrix ({meta['label']})", "", summary, "", f"Command: `{meta['command']}`", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    failing = [c for c in cells if not c.passed]
    lines += ["", f"## Failing cells ({len(failing)})", "", "| model | producer | path | error |",
              "|---|---|---|---|"]
    lines += [f"| {c.model} | {c.producer} | {c.path} | {c.error.replace('|', '/')}"
              f"{' (traceback)' if c.traceback else ''} |" for c in failing]
    return "\n".join(lines) + "\n"


def rewrite_markdown(json_path: Path) -> None:
    """LABEL.md again from LABEL.json (after a resumed run, or to change the layout)."""
    doc = json.loads(json_path.read_text())
    cells = [Cell(**c) for c in doc["cells"]]
    meta = dict(doc["meta"], models=len({c.model for c in cells}))
    json_path.with_suffix(".md").write_text(markdown(cells, doc["paths"], meta))


def print_matrix(cells: list[Cell], paths: list[str]) -> None:
    rows = table(cells, paths)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    failing = [c for c in cells if not c.passed]
    print(f"\n{len(failing)} failing cells:")
    for c in failing:
        print(f"  {c.model} [{c.path}]: {c.error}{' (traceback)' if c.traceback else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--only", default=None, help="comma-separated model names")
    parser.add_argument("--producers", default=None, help="comma-separated producers")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "corpus")
    parser.add_argument("--label", default="matrix", help="result file stem")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per vlc call")
    parser.add_argument("--resume", action="store_true",
                        help="keep the cells of models already in OUT/LABEL.json; run the others")
    parser.add_argument("--rerun", default="",
                        help="with --resume: comma-separated models whose kept cells are run again "
                             "(after a fix), the rest kept")
    args = parser.parse_args(argv)
    corpus = args.corpus or corpus_dir()
    entries = load_manifest(corpus)
    if args.only:
        entries = [e for e in entries if e["name"] in set(args.only.split(","))]
    if args.producers:
        entries = [e for e in entries if e["producer"] in set(args.producers.split(","))]
    paths = [p for p in args.paths.split(",") if p]
    work_root = Path(tempfile.mkdtemp(prefix="vlc-corpus-matrix-"))
    # a fresh front-end cache per run: no graph normalized by an older vlc is reused
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", COLUMNS="400",
               VLC_CACHE=str(work_root / "cache"))
    start, cells = time.perf_counter(), _resumed(args, paths)
    done = {c.model for c in cells}
    for i, entry in enumerate(entries, 1):
        if entry["name"] in done:
            continue
        model_cells = run_model(entry, corpus, paths, work_root, args.timeout, env)
        cells += model_cells
        marks = " ".join(f"{c.path}:{'ok' if c.passed else 'FAIL'}" for c in model_cells)
        print(f"[{i}/{len(entries)}] {entry['name']} ({entry['producer']}): {marks}", flush=True)
        _write(args, cells, paths, len(entries), start, argv)  # partial results survive a kill
    shutil.rmtree(work_root, ignore_errors=True)
    print()
    print_matrix(cells, paths)
    return 0


def _resumed(args: argparse.Namespace, paths: list[str]) -> list[Cell]:
    path = args.out / f"{args.label}.json"
    if not args.resume or not path.exists():
        return []
    cells = [Cell(**c) for c in json.loads(path.read_text())["cells"]]
    rerun = set(filter(None, args.rerun.split(",")))
    complete = {m for m in {c.model for c in cells}
                if {c.path for c in cells if c.model == m} >= set(paths) and m not in rerun}
    return [c for c in cells if c.model in complete and c.path in paths]


def _write(args: argparse.Namespace, cells: list[Cell], paths: list[str], models: int,
           start: float, argv: list[str] | None) -> None:
    import vlc as vlc_pkg

    meta = {"label": args.label, "models": models, "seconds": time.perf_counter() - start,
            "vlc_version": vlc_pkg.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python benchmarks/corpus/matrix.py " + " ".join(argv or sys.argv[1:]),
            "vlc_bin": vlc_bin()}
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "paths": paths, "matrix": table(cells, paths),
           "cells": [asdict(c) for c in cells]}
    (args.out / f"{args.label}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / f"{args.label}.md").write_text(markdown(cells, paths, meta))


if __name__ == "__main__":
    sys.exit(main())
