#!/usr/bin/env python3
"""Correctness and speed of the vlc Triton kernels against torch's native fused kernels, on a GPU.

One call does everything (needs torch with CUDA and triton; vlc need not be installed):

    python benchmarks/plugins/kernels.py                 # writes into $OUT, else results/plugins/
    python benchmarks/plugins/kernels.py --write-decisions   # also rewrites plugins/decisions.json

For every activation shape the examples produce (plugins/kernel_shapes.json, from
`python -m vlc.plugins.shapes`: full size, batch 1, the first axis scaled by each --batches value)
and for fp32 and fp16 it:

1. checks the kernel on the WHOLE tensor against torch (F.silu, F.gelu erf/tanh, F.layer_norm):
   the allocator is first filled with NaN so an element the kernel skips shows up as a mismatch;
   tolerances fp32 atol=rtol=1e-5 (LayerNorm 1e-4), fp16 1e-2;
2. times kernel and native with CUDA events around each call (device time only, no transfers),
   after warm-up, alternating the two, and reports median / p90 / mean;
3. decides per kernel: on by default for TensorRT only if every check passed and the native/kernel
   median ratio has a geometric mean > 1.0 and is > 1.0 in at least 75% of the cases.
   LayerNorm is native-preferred on TensorRT and stays off whatever the numbers say.
4. compiles every kernel ahead of time to PTX for compute capability 8.6 and 9.0 (the TensorRT
   AOT path) and reports failures.

Outputs: kernels.json (every case), kernels.md (tables), decisions.json (for plugins/).
Exit status 0 when every correctness check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "plugins" / "kernel_shapes.json"
DECISIONS = ROOT / "plugins" / "decisions.json"
NATIVE_PREFERRED = {"layernorm"}  # TensorRT maps LayerNormalization to its native layer
TOLERANCE = {"float32": (1e-5, 1e-5), "float16": (1e-2, 1e-2)}
LAYERNORM_FP32_TOLERANCE = (1e-4, 1e-4)


def import_ops() -> Any:
    """vlc.plugins.kernels.ops, from an install or straight from this checkout.

    Without an install, bare package modules stand in for `vlc` and `vlc.plugins` so that only the
    kernel modules execute (no onnx/onnxscript needed on the GPU machine).
    """
    try:
        return importlib.import_module("vlc.plugins.kernels.ops")
    except ImportError:
        pass
    for name, path in (("vlc", ROOT / "compiler"), ("vlc.plugins", ROOT / "plugins")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    return importlib.import_module("vlc.plugins.kernels.ops")


def cases(batches: list[int], kernels: set[str]) -> list[dict[str, Any]]:
    data = json.loads(SHAPES.read_text())
    found: dict[str, dict[str, Any]] = {}
    for entry in data["shapes"]:
        if entry["kernel"] not in kernels:
            continue
        for batch in batches:
            shape = [entry["shape"][0] * batch, *entry["shape"][1:]]
            case = {"kernel": entry["kernel"], "shape": shape, "batch": batch,
                    "approximate": entry.get("approximate"), "eps": entry.get("eps")}
            key = json.dumps({k: v for k, v in case.items() if k != "batch"}, sort_keys=True)
            item = found.setdefault(key, {**case, "examples": []})
            if entry["example"] not in item["examples"]:
                item["examples"].append(entry["example"])
    return list(found.values())


def make_inputs(torch: Any, case: dict[str, Any], dtype: Any, device: str) -> tuple[Any, ...]:
    gen = torch.Generator(device=device).manual_seed(0)
    x = (torch.randn(case["shape"], device=device, generator=gen) * 2.0).to(dtype)
    if case["kernel"] != "layernorm":
        return (x,)
    n = case["shape"][-1]
    w = (torch.rand(n, device=device, generator=gen) + 0.5).to(dtype)
    b = (torch.rand(n, device=device, generator=gen) - 0.5).to(dtype)
    return x, w, b


def functions(torch: Any, ops: Any, case: dict[str, Any]) -> tuple[Callable, Callable]:
    F = torch.nn.functional
    kind = case["kernel"]
    if kind == "silu":
        return ops.silu, F.silu
    if kind == "gelu":
        approx = case["approximate"] or "none"
        return (lambda x: ops.gelu(x, approx)), (lambda x: F.gelu(x, approximate=approx))
    eps = case["eps"] if case["eps"] is not None else 1e-5
    n = case["shape"][-1]
    return (lambda x, w, b: ops.layer_norm(x, w, b, eps)), (lambda x, w, b: F.layer_norm(x, (n,), w, b, eps))


def poison_allocator(torch: Any, numel: int, dtype: Any) -> None:
    """Fill about the next allocation's memory with NaN, so skipped elements cannot look right."""
    junk = torch.full((numel + 4096,), float("nan"), device="cuda", dtype=dtype)
    torch.cuda.synchronize()
    del junk


def check(torch: Any, ops_fn: Callable, native_fn: Callable, args: tuple[Any, ...], case: dict[str, Any],
          dtype_name: str) -> dict[str, Any]:
    x = args[0]
    if x.is_cuda:
        poison_allocator(torch, x.numel(), x.dtype)
    out = ops_fn(*args)
    if x.is_cuda:
        torch.cuda.synchronize()
    reference = native_fn(*(a.float() for a in args)).to(torch.float64)  # fp32 math as the reference
    got = out.to(torch.float64)
    atol, rtol = TOLERANCE[dtype_name]
    if case["kernel"] == "layernorm" and dtype_name == "float32":
        atol, rtol = LAYERNORM_FP32_TOLERANCE
    bad = ~torch.isclose(got, reference, atol=atol, rtol=rtol)
    bad |= ~torch.isfinite(got)
    err = (got - reference).abs()
    native_err = (native_fn(*args).to(torch.float64) - reference).abs()
    return {"ok": bool(bad.sum().item() == 0) and out.shape == x.shape,
            "mismatches": int(bad.sum().item()), "elements": x.numel(),
            "max_abs_err": float(torch.nan_to_num(err, nan=math.inf).max().item()),
            "native_max_abs_err": float(native_err.max().item()), "atol": atol, "rtol": rtol}


def time_calls(torch: Any, fns: dict[str, Callable], args: tuple[Any, ...], warmup: int,
               repeats: int) -> dict[str, dict[str, float]]:
    if not args[0].is_cuda:  # --device cpu dry run: host clock, numbers mean nothing
        samples = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(*args)
                samples[name].append((time.perf_counter() - start) * 1e6)
        return {name: summarize(values) for name, values in samples.items()}
    for fn in fns.values():
        for _ in range(warmup):
            fn(*args)
    torch.cuda.synchronize()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    events = {name: [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                     for _ in range(repeats)] for name in fns}
    for i in range(repeats):  # alternate so clock or thermal drift hits both alike
        for name, fn in fns.items():
            start, end = events[name][i]
            start.record()
            fn(*args)
            end.record()
    torch.cuda.synchronize()
    for name in fns:
        samples[name] = [s.elapsed_time(e) * 1000.0 for s, e in events[name]]  # microseconds
    return {name: summarize(values) for name, values in samples.items()}


def summarize(us: list[float]) -> dict[str, float]:
    ordered = sorted(us)
    p90 = ordered[min(len(ordered) - 1, int(math.ceil(0.9 * len(ordered))) - 1)]
    return {"median_us": statistics.median(ordered), "p90_us": p90, "mean_us": statistics.fmean(ordered),
            "min_us": ordered[0], "n": len(ordered)}


def decide(kernel: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [r for r in rows if r["kernel"] == kernel]
    if not mine:
        return {"on": False, "reason": "not measured: no shapes for this kernel"}
    all_ok = all(r["check"]["ok"] for r in mine)
    speedups = [r["speedup"] for r in mine]
    geomean = math.exp(statistics.fmean(math.log(s) for s in speedups))
    faster = sum(s > 1.0 for s in speedups) / len(speedups)
    measured = (f"measured: native/kernel median ratio geomean {geomean:.3f}, faster in "
                f"{faster:.0%} of {len(speedups)} cases, correctness {'passed' if all_ok else 'FAILED'}")
    if kernel in NATIVE_PREFERRED:
        return {"on": False, "geomean_speedup": geomean, "faster_fraction": faster, "correct": all_ok,
                "reason": f"native-preferred (TensorRT's LayerNormalization layer); {measured}"}
    on = all_ok and geomean > 1.0 and faster >= 0.75
    return {"on": on, "geomean_speedup": geomean, "faster_fraction": faster, "correct": all_ok,
            "reason": f"{'on' if on else 'off'}: {measured}"}


def aot_check(ops: Any) -> list[dict[str, Any]]:
    results = []
    for cc in ((8, 6), (9, 0)):
        for kind, kw in (("silu", {}), ("gelu", {"approximate": "none"}), ("gelu", {"approximate": "tanh"}),
                         ("layernorm", {"n": 768, "eps": 1e-12}), ("layernorm", {"n": 144})):
            for dtype in ("float32", "float16"):
                entry = {"kernel": kind, **kw, "dtype": dtype, "capability": f"{cc[0]}.{cc[1]}"}
                try:
                    compiled = ops.compile_ptx(kind, dtype, cc, **kw)
                    entry.update(ok=True, name=compiled.name, ptx_bytes=len(compiled.ptx),
                                 num_warps=compiled.num_warps, shared=compiled.shared)
                except Exception as exc:  # noqa: BLE001 - report every failure
                    entry.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                results.append(entry)
    return results


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"# vlc plugin kernels vs torch native — {env['gpu']}", "",
             f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}; device time per call "
             f"(CUDA events), {report['settings']['warmup']} warm-up, {report['settings']['repeats']} "
             "timed calls each, alternating; no transfers. Speed-up = native median / kernel median.", "",
             "| kernel | shape | dtype | ok | max abs err (native) | kernel median / p90 µs | "
             "native median / p90 µs | speed-up | examples |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["cases"]:
        name = r["kernel"] + (f" ({r['approximate']})" if r.get("approximate") else "")
        k, n = r["timing"]["kernel"], r["timing"]["native"]
        lines.append(f"| {name} | {'x'.join(map(str, r['shape']))} | {r['dtype']} | "
                     f"{'yes' if r['check']['ok'] else '**NO**'} | {r['check']['max_abs_err']:.2e} "
                     f"({r['check']['native_max_abs_err']:.2e}) | {k['median_us']:.1f} / {k['p90_us']:.1f} | "
                     f"{n['median_us']:.1f} / {n['p90_us']:.1f} | {r['speedup']:.2f} | {', '.join(r['examples'])} |")
    lines += ["", "## Decisions (TensorRT default)", "", "| kernel | on | reason |", "|---|---|---|"]
    for kernel, d in report["decisions"].items():
        lines.append(f"| {kernel} | {'yes' if d['on'] else 'no'} | {d['reason']} |")
    failed = [a for a in report["aot"] if not a["ok"]]
    lines += ["", f"AOT PTX compilation (TensorRT aot_impl path): {len(report['aot']) - len(failed)} of "
                  f"{len(report['aot'])} compiled" + ("" if not failed else
                                                      "; failures: " + "; ".join(a["error"] for a in failed))]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,8", help="batch sizes scaling each shape's first axis")
    parser.add_argument("--dtypes", default="float32,float16")
    parser.add_argument("--kernels", default="silu,gelu,layernorm")
    parser.add_argument("--warmup", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "results" / "plugins"))
    parser.add_argument("--write-decisions", action="store_true", help="also rewrite plugins/decisions.json")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: a dry run of this script under TRITON_INTERPRET=1 (tiny shapes, "
                             "meaningless timings, writes no decisions)")
    parser.add_argument("--max-elements", type=int, default=0, help="skip shapes larger than this (0: none)")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this benchmark runs on a GPU machine (or --device cpu for a dry run)",
              file=sys.stderr)
        return 2
    import triton

    ops = import_ops()
    torch.backends.cuda.matmul.allow_tf32 = False
    dtypes = {"float32": torch.float32, "float16": torch.float16}
    kernels = set(args.kernels.split(","))
    rows = []
    started = time.time()
    for case in cases([int(b) for b in args.batches.split(",")], kernels):
        if args.max_elements and math.prod(case["shape"]) > args.max_elements:
            continue
        for dtype_name in args.dtypes.split(","):
            inputs = make_inputs(torch, case, dtypes[dtype_name], args.device)
            mine, native = functions(torch, ops, case)
            result = check(torch, mine, native, inputs, case, dtype_name)
            timing = time_calls(torch, {"kernel": mine, "native": native}, inputs, args.warmup, args.repeats)
            speedup = timing["native"]["median_us"] / timing["kernel"]["median_us"]
            rows.append({**case, "dtype": dtype_name, "check": result, "timing": timing, "speedup": speedup})
            print(f"{case['kernel']:9} {case.get('approximate') or ''!s:4} {'x'.join(map(str, case['shape'])):>16} "
                  f"{dtype_name:7} ok={result['ok']!s:5} err={result['max_abs_err']:.1e} "
                  f"kernel={timing['kernel']['median_us']:8.1f}us native={timing['native']['median_us']:8.1f}us "
                  f"x{speedup:.2f}", flush=True)
            del inputs
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        gpu, capability = props.name, f"{props.major}.{props.minor}"
    else:
        gpu, capability = "cpu (TRITON_INTERPRET dry run)", "-"
    report = {
        "schema": 1, "command": "python benchmarks/plugins/kernels.py " + " ".join(argv or sys.argv[1:]),
        "environment": {"gpu": gpu, "capability": capability,
                        "torch": torch.__version__, "triton": triton.__version__,
                        "cuda": torch.version.cuda, "python": platform.python_version(),
                        "host": platform.node()},
        "settings": {"warmup": args.warmup, "repeats": args.repeats, "batches": args.batches,
                     "timing": "CUDA events around each call; device time, no transfers"},
        "seconds": round(time.time() - started, 1),
        "cases": rows,
        "decisions": {k: decide(k, rows) for k in ("silu", "gelu", "layernorm") if k in kernels},
        "aot": aot_check(ops) if args.device == "cuda" else [],  # the interpreter cannot compile
    }
    decisions = json.loads(DECISIONS.read_text())
    decisions.update(measured=args.device == "cuda", source=f"benchmarks/plugins/kernels.py on {gpu} "
                                           f"(torch {torch.__version__}, triton {triton.__version__}); "
                                           "native path measured: torch's fused kernels",
                     measured_at=time.strftime("%Y-%m-%d"))
    for kernel, d in report["decisions"].items():
        decisions["decisions"].setdefault(kernel, {})["trt"] = {
            "on": d["on"], "reason": d["reason"],
            **{k: round(d[k], 4) for k in ("geomean_speedup", "faster_fraction") if k in d}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "kernels.md").write_text(markdown(report))
    (out / "decisions.json").write_text(json.dumps(decisions, indent=2) + "\n")
    if args.write_decisions and args.device == "cuda":
        DECISIONS.write_text(json.dumps(decisions, indent=2) + "\n")
    ok = all(r["check"]["ok"] for r in rows) and all(a["ok"] for a in report["aot"])
    print(f"\n{len(rows)} cases, {sum(r['check']['ok'] for r in rows)} correct; AOT "
          f"{sum(a['ok'] for a in report['aot'])}/{len(report['aot'])}; decisions: "
          + ", ".join(f"{k}={'on' if d['on'] else 'off'}" for k, d in report["decisions"].items())
          + f"; wrote {out}/kernels.json, kernels.md, decisions.json")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
