"""ONNX Runtime on the CPU, int8 against fp32, on the reference workloads: latency, the ratio, the
int8 graph's accuracy and the share of its Conv/MatMul/Gemm MACs left in int8.

    .venv/bin/python benchmarks/precision/int8_cpu.py mobilevit-s clip-vit-b32-image --batch 1,8 \
        --results benchmarks/results/precision/int8-cpu --out benchmarks/results/precision/int8-cpu-$(hostname).md

Each model goes through `vlc bench` (vlc.api.bench) with the onnxruntime target on the CPU at fp32
and int8 (default int8 build: int8=auto, mse calibration on generated samples with spread, uint8
activations with 7-bit weights; `vlc targets --options` lists them), so
both precisions are timed the same way in the same run: warm-up, then `--iterations` synchronous
calls, host clock, inputs and outputs in host memory (there are no transfers on the CPU). The
records are vlc's bench records; this script only tabulates them. The speed-up is fp32 median /
int8 median; below 1 int8 is slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from vlc import api
from vlc.environment import collect


def _records(results: Path, model: str, machine: str) -> dict[tuple[str, int], dict[str, Any]]:
    found = {}
    for path in sorted((results / machine / model).glob("onnxruntime-*.result.json")):
        record = json.loads(path.read_text())
        found[(record["precision"], int(record["batch"]))] = record
    return found


def _int8_build(record: dict[str, Any]) -> dict[str, Any]:
    """The int8 report the build wrote into its manifest (MAC share, excluded nodes)."""
    artifact = record.get("artifact") or {}
    manifest = Path(artifact.get("path", "")) / "manifest.json"
    if not manifest.is_file():
        return {}
    precision = (json.loads(manifest.read_text()).get("extra") or {}).get("precision") or {}
    return precision.get("int8") or {}


def _ms(stats: dict[str, Any] | None, key: str) -> str:
    return f"{stats[key]:.2f}" if stats else "-"


def table(results: Path, models: list[str], machine: str) -> list[str]:
    lines = ["| model | batch | fp32 median ms (p90) | int8 median ms (p90) | speed-up fp32/int8 | "
             "int8 cosine vs torch fp32 | int8 MAC share | float nodes |", "|---|---|---|---|---|---|---|---|"]
    for model in models:
        records = _records(results, model, machine)
        for batch in sorted({b for _, b in records}):
            fp32, int8 = records.get(("fp32", batch)), records.get(("int8", batch))
            f, i = (r.get("latency_ms") if r and r["status"] == "ok" else None for r in (fp32, int8))
            ratio = f"{f['median'] / i['median']:.2f}x" if f and i else "-"
            accuracy = (int8 or {}).get("accuracy") or {}
            build = _int8_build(int8) if int8 else {}
            share = build.get("mac_share")
            lines.append(
                f"| {model} | {batch} | {_ms(f, 'median')} ({_ms(f, 'p90')}) | {_ms(i, 'median')} ({_ms(i, 'p90')}) | "
                f"{ratio} | {accuracy.get('cosine', '-') if isinstance(accuracy, dict) else '-'} | "
                f"{f'{100 * share:.1f}%' if share is not None else '-'} | {len(build.get('excluded') or [])} |")
            for name, r in (("fp32", fp32), ("int8", int8)):
                if r and r["status"] != "ok":
                    lines.append(f"|  | | {name} {r['status']}: {r.get('reason', '')} | | | | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/precision/int8-cpu"))
    parser.add_argument("--artifacts", type=Path, default=Path(".vlc/bench-int8"))
    parser.add_argument("--machine", default=platform.node())
    parser.add_argument("--out", type=Path, required=True, help="the Markdown table")
    args = parser.parse_args()
    from vlc.timing import ProfileSettings

    started = time.time()
    load = os.getloadavg()
    for model in args.models:
        summary = api.bench(model, ["onnxruntime"], ["fp32", "int8"], batches=[int(b) for b in args.batch.split(",")],
                            results=args.results, artifacts=args.artifacts, device="cpu", machine=args.machine,
                            settings=ProfileSettings(warmup=args.warmup, iterations=args.iterations))
        for record in summary.failed:
            print(f"{model}: {record.target} {record.precision} b{record.batch} failed: {record.reason}")
    cpu = collect().get("cpu", {})
    header = [f"# ONNX Runtime CPU int8 vs fp32 on {args.machine}", "",
              f"Command: `.venv/bin/python benchmarks/precision/int8_cpu.py {' '.join(args.models)} "
              f"--batch {args.batch} "
              f"--warmup {args.warmup} --iterations {args.iterations} --machine {args.machine}`", "",
              f"CPU: {cpu.get('model', '?')}, {cpu.get('usable_cores', '?')} usable cores, SIMD "
              f"{', '.join(s for s in cpu.get('simd', []) if 'vnni' in s or s.startswith('avx')) or '?'}; "
              f"load average at start {load[0]:.2f}; {time.time() - started:.0f} s in all. "
              "Host clock, synchronous calls, inputs and outputs in host memory (no transfers on a CPU); "
              "fp32 and int8 timed in the same run. Records: the folder given by --results.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + table(args.results, args.models, args.machine)) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
