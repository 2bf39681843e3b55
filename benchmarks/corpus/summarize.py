"""Group the failing cells of a matrix result by cause (the causes of issue-style reports).

    python benchmarks/corpus/summarize.py benchmarks/results/corpus/full.json

Prints a Markdown table: cause, cells, models (and their paths). The patterns match the
one-line errors vlc prints; a cell no pattern matches is listed as "other" with its error.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

# (cause, substrings of the one-line error); the first match wins.
CAUSES = [
    ("needs the onnxruntime artifact that failed to compile", ("not run:",)),
    ("dynamic axes with no range (trt): no size chosen from the graph", ("with no range",)),
    ("dynamic axes ATC needs sizes for: no size chosen from the graph",
     ("is dynamic and not the batch axis",)),
    ("generated inputs give a constant reference (no spread)", ("no spread",)),
    ("generated inputs the model refuses (shape-carrying or sequence inputs)",
     ("refuses the inputs", "invalid expand shape", "Pad reflect", "running If node",
      "missing values for shape input")),
    ("fp16 outside tolerance on generated inputs", ("misses its tolerance",)),
    ("TensorRT-RTX has no NonZero plugin", ("NonZero",)),
    ("generic error from the Ascend patches (no node, no fix)", ("Field 'shape' of 'type'",
                                                                  "applying them failed")),
    ("vlc check reports problems", ("patched and re-checked",)),
]


def cause_of(error: str) -> str:
    for cause, needles in CAUSES:
        if any(n in error for n in needles):
            return cause
    return "other"


def summarize(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    groups: dict[str, list[dict]] = defaultdict(list)
    for c in cells:
        if not c["passed"]:
            groups[cause_of(c["error"])].append(c)
    lines = ["| cause | cells | models (paths) |", "|---|---|---|"]
    for cause, failed in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        by_model: dict[str, list[str]] = defaultdict(list)
        for c in failed:
            by_model[c["model"]].append(c["path"])
        models = "; ".join(f"{m} ({', '.join(p)})" for m, p in sorted(by_model.items()))
        if cause == "other":
            models = "; ".join(f"{c['model']} ({c['path']}): {c['error'][:160]}" for c in failed)
        lines.append(f"| {cause} | {len(failed)} | {models.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1])), end="")
