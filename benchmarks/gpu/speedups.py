#!/usr/bin/env python3
"""The GPU benchmark's speed-up table: vlc's onnxruntime CUDA path against every PyTorch mode
measured in the same results directory, per model and batch size, from the `vlc bench` records.

    python3 benchmarks/gpu/speedups.py benchmarks/results/h200 [--precision fp16] [--out FILE.md]

For each cell it lists min / median / p90 / p99 (ms) of each path, the strongest PyTorch mode
(lowest median) and vlc's speed-up over it and over plain `torch.compile` (ratios of medians).
Cells that failed or are missing are left out; the table says which paths were measured.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

VLC = "onnxruntime"  # vlc's normalized graph on the onnxruntime target's CUDA path
COMPILE = "torch:mode=compile"


def load(results: Path, precision: str) -> dict[tuple[str, int], dict[str, dict[str, Any]]]:
    """(model, batch) -> target label -> record, for ok records at `precision`."""
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for path in sorted(results.rglob("*.result.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "ok" and record.get("precision") == precision and record.get("latency_ms"):
            cells[(record["model"], int(record["batch"]))][record["target"]] = record
    return cells


def torch_labels(cell: dict[str, dict[str, Any]]) -> list[str]:
    return [label for label in cell if label == "torch" or label.startswith("torch:")]


def mode_name(label: str) -> str:
    return "eager" if label == "torch" else label.removeprefix("torch:mode=")


def spread(record: dict[str, Any]) -> str:
    lat = record["latency_ms"]
    return f"{lat['min']:.2f} / {lat['median']:.2f} / {lat['p90']:.2f} / {lat['p99']:.2f}"


def table(cells: dict[tuple[str, int], dict[str, dict[str, Any]]]) -> list[str]:
    lines = ["| model | batch | vlc onnxruntime, ms (min / median / p90 / p99) | strongest PyTorch | "
             "its ms (min / median / p90 / p99) | vlc vs strongest | torch.compile (default) median | "
             "vlc vs torch.compile | PyTorch modes measured |",
             "|---|---:|---|---|---|---:|---:|---:|---|"]
    for (model, batch), cell in sorted(cells.items()):
        modes = torch_labels(cell)
        if VLC not in cell or not modes:
            continue
        best = min(modes, key=lambda label: cell[label]["latency_ms"]["median"])
        ours = cell[VLC]["latency_ms"]["median"]
        theirs = cell[best]["latency_ms"]["median"]
        compile_ms = cell[COMPILE]["latency_ms"]["median"] if COMPILE in cell else None
        measured = ", ".join(f"{mode_name(m)} {cell[m]['latency_ms']['median']:.2f}"
                             for m in sorted(modes, key=lambda label: cell[label]["latency_ms"]["median"]))
        lines.append(f"| {model} | {batch} | {spread(cell[VLC])} | {mode_name(best)} | "
                     f"{spread(cell[best])} | **{theirs / ours:.2f}×** | "
                     f"{'' if compile_ms is None else f'{compile_ms:.2f}'} | "
                     f"{'' if compile_ms is None else f'{compile_ms / ours:.2f}×'} | {measured} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = table(load(args.results, args.precision))
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
