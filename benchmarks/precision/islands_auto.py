"""islands=auto against the static fp32 islands on the reference workloads: fp32 node counts,
accuracy against fp32 and the search's cost, written as JSON and Markdown.

    .venv/bin/python benchmarks/precision/islands_auto.py mobilevit-s clip-vit-b32-image \
        --precision fp16 --out benchmarks/results/precision/islands-auto

Each model goes through vlc's front end (cached), then vlc.frontend.precision.convert twice on the
model's own check inputs (batch 2, seed 0): the static islands and islands=auto. Both graphs are
then checked on held-out inputs (batch 2, seed 1) that the search never saw, the same way the
conversion check does (ONNX Runtime CPU as the graph runs, and every low-precision tensor rounded
and ranged where produced). Measured on the CPU: no GPU kernel's own low-precision arithmetic is in
these numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any


def _held_out(source: Any, onnx_path: Path, graph: Path, precision: str) -> dict[str, Any]:
    import onnx
    from onnx import TensorProto

    from vlc.accuracy import compare_outputs, default_tolerance
    from vlc.frontend.precision.check import emulate_low_precision, run_onnx
    from vlc.frontend.precision.islands import worst_numbers

    feeds = source.model.generate_inputs(2, seed=1)
    reference = run_onnx(onnx_path, feeds)
    low = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.BFLOAT16
    model = onnx.load(str(graph))
    result = {}
    runs = {"emulated": emulate_low_precision(model, low)}
    if precision == "fp16":
        runs["as_run"] = model
    for label, candidate in runs.items():
        report = compare_outputs(run_onnx(candidate, feeds), reference, default_tolerance(precision))
        result[label] = {"passed": report.passed, **worst_numbers(report)}
    return result


def measure(name: str, precision: str, out_dir: Path) -> dict[str, Any]:
    from vlc.frontend.pipeline import prepare
    from vlc.frontend.precision import convert, model_inputs
    from vlc.frontend.precision.islands import worst_numbers

    start = time.perf_counter()
    source = prepare(name)
    front = time.perf_counter() - start
    inputs = model_inputs(source, precision)
    row: dict[str, Any] = {"model": name, "precision": precision, "front_end_s": round(front, 1),
                           "check_inputs": inputs["check_note"]}
    for mode in ("static", "auto"):
        graph = out_dir / f"{name}.{precision}.{mode}.onnx"
        t = time.perf_counter()
        report = convert(source.onnx_path, precision, graph, input_specs=source.input_specs,
                         islands=mode, strict=False, **inputs)
        row[mode] = {"fp32_nodes": sum(report.fp32_ops.values()), "fp32_ops": report.fp32_ops,
                     "casts": report.casts_inserted, "passed": report.passed,
                     "as_run": worst_numbers(report.accuracy) if report.accuracy else None,
                     "emulated": worst_numbers(report.emulated_accuracy) if report.emulated_accuracy else None,
                     "convert_s": round(time.perf_counter() - t, 1),
                     "held_out": _held_out(source, source.onnx_path, graph, precision)}
        if mode == "auto":
            row["search"] = report.islands
        graph.unlink()
    return row


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = ["# islands=auto vs the static fp32 islands", "", f"Command: `{command}`", "",
             f"Machine: {platform.node()} ({platform.processor() or platform.machine()}), CPU only; "
             "ONNX Runtime CPUExecutionProvider.", "",
             "| model | precision | fp32 nodes static → auto | Casts static → auto | min cosine static / auto "
             "(check inputs, emulated) | held-out min cosine static / auto (emulated) | search runs | search s |",
             "|---|---|---:|---:|---|---|---:|---:|"]
    for r in rows:
        s, a = r["static"], r["auto"]
        lines.append(f"| {r['model']} | {r['precision']} | {s['fp32_nodes']} → {a['fp32_nodes']} | "
                     f"{s['casts']} → {a['casts']} | {s['emulated']['min_cosine']:.6f} / "
                     f"{a['emulated']['min_cosine']:.6f} | {s['held_out']['emulated']['min_cosine']:.6f} / "
                     f"{a['held_out']['emulated']['min_cosine']:.6f} | {r['search']['search']['evaluations']} | "
                     f"{r['search']['search']['seconds']} |")
    lines += ["", "Per model: the static set by op type, what auto kept, and the worst max/mean/median abs and "
              "rel errors are in the JSON beside this file (`static`, `auto`, `search`)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "bf16"))
    parser.add_argument("--out", required=True, help="path stem: writes STEM.json and STEM.md")
    args = parser.parse_args()
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        rows.append(measure(name, args.precision, stem.parent))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "search"}, default=str), flush=True)
    command = "python benchmarks/precision/islands_auto.py " + " ".join(args.models) + \
        f" --precision {args.precision} --out {args.out}"
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2, default=str))
    stem.with_suffix(".md").write_text(markdown(rows, command))


if __name__ == "__main__":
    main()
