#!/usr/bin/env python3
"""Where the GPU time goes: every CUDA kernel of one model's forward pass, timed by CUPTI
(torch.profiler's CUDA activity, which sees ONNX Runtime's kernels as well as PyTorch's),
grouped by kind of work, for vlc's onnxruntime CUDA path and the PyTorch baselines.

    python3 benchmarks/gpu/kernel_profile.py clip-vit-b32-image --batch 1024 \\
        --paths onnxruntime,onnxruntime-raw,torch-compile --ceilings --out DIR

A path is one of PATHS below, optionally with more target options: `onnxruntime:attention=cudnn`.

Writes DIR/<model>-b<batch>-kernels.json and .md. Each path is compiled at fp16 for CUDA, timed
device-resident (inputs and outputs on the GPU; warm-up 5, 20 timed calls, median; the
onnxruntime paths with their CUDA graph, as vlc runs them), then profiled over 5 calls without
the CUDA graph so that every kernel is a record of its own. `--ceilings` also measures what this
GPU reaches on the model's matrix products alone (torch.matmul) and on a device-to-device copy:
the two numbers the model's time is held against.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlc.frontend.pipeline import FrontendOptions, prepare
from vlc.plugin_manager import get_target
from vlc.spec import Precision, TargetSpec

# path name -> (target, target options, graph)
PATHS: dict[str, tuple[str, dict[str, Any], str]] = {
    "onnxruntime": ("onnxruntime", {}, "normalized"),
    "onnxruntime-raw": ("onnxruntime", {"fusions": False, "islands": "all"}, "raw"),
    "torch-compile": ("torch", {"mode": "compile"}, "normalized"),
    "torch-max-autotune": ("torch", {"mode": "max-autotune"}, "normalized"),
    "torch-eager": ("torch", {}, "normalized"),
}
DEFAULT_BATCH = {"clip-vit-b32-image": 1024, "vilbert-vqa": 256, "mobilevit-s": 32}

# kernel name -> kind of work, case-insensitive; first match wins (attention before GEMM: its
# kernels say "gemm" too; convolution before GEMM: cuDNN's are implicit GEMMs)
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("attention", r"flash|fmha|attention|mha|softmax|sdpa"),
    ("layernorm", r"layer_?norm"),
    ("convolution", r"conv|fprop|dgrad|wgrad"),
    ("gemm", r"gemm|nvjet|cutlass|xmma|cublas|sm90_|sm80_|s16816|h16816|wgmma"),
    ("gelu / activation", r"gelu|sigmoid|silu|tanh"),
    ("elementwise (add, mul, bias)", r"elementwise|triton_poi|vectorized|unrolled|add|mul|bias"),
    ("copy / transpose / split / cast", r"copy|transpose|split|concat|cast|expand|slice|gather|memcpy|memset"),
    ("reduction", r"reduce|triton_red|triton_per"),
)


def categorize(name: str) -> str:
    for category, pattern in CATEGORIES:
        if re.search(pattern, name, re.IGNORECASE):
            return category
    return "other"


def parse_path(path: str) -> tuple[str, dict[str, Any], str]:
    """'onnxruntime:attention=flash' -> (target, options, graph)."""
    base, *extra = path.split(":")
    if base not in PATHS or any("=" not in e for e in extra):
        raise ValueError(f"path '{path}' is not one of {', '.join(PATHS)} with optional :key=value options")
    target_name, options, graph = PATHS[base]
    return target_name, {**options, **dict(e.split("=", 1) for e in extra)}, graph


def session_call(path: str, model: str, batch: int, work: Path) -> tuple[Callable[[], Any], Callable[[], Any], dict]:
    """(timed call as vlc runs it, call to profile kernel by kernel, artifact facts) for one path."""
    import torch

    target_name, options, graph = parse_path(path)
    frontend = FrontendOptions(simplify=False, passes=()) if graph == "raw" else FrontendOptions()
    source = prepare(model, options=frontend)
    target = get_target(target_name)
    spec = TargetSpec(target_name, precision=Precision.FP16, device="cuda", batch=(batch, batch, batch),
                      options=dict(options))
    artifact = target.compile(source, spec, work / re.sub(r"[^A-Za-z0-9_.-]", "_", path))
    feeds = source.generate_inputs(batch)
    facts = {"target": target_name, "options": options, "graph": graph,
             "fusions": artifact.manifest.extra.get("fusions")}
    if target_name == "onnxruntime":
        from vlc.targets.onnxruntime.gpu_path import CudaSessions

        typed = artifact.spec.options  # every option typed, as the target's sessions take them
        with_graph = CudaSessions(artifact.file("main"), typed, cuda_graph=True)
        without = CudaSessions(artifact.file("main"), typed, cuda_graph=False)
        return with_graph.device_resident(feeds), without.device_resident(feeds), facts
    session = target.open(artifact)
    compute = session.compute_only(feeds)  # type: ignore[attr-defined]

    def call() -> Any:
        compute()
        torch.cuda.synchronize()

    return call, call, facts


def median_ms(call: Callable[[], Any], warmup: int = 5, iterations: int = 20) -> float:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def kernel_times(call: Callable[[], Any], runs: int = 5) -> list[tuple[str, float]]:
    """(kernel name, microseconds) for every GPU kernel of `runs` calls, from CUPTI."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        call()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            call()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text()).get("traceEvents", [])
    return [(e["name"], float(e["dur"])) for e in events
            if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e]


def summarize(kernels: list[tuple[str, float]], runs: int, latency_ms: float) -> dict[str, Any]:
    per_category: dict[str, float] = defaultdict(float)
    per_kernel: dict[str, list[float]] = defaultdict(list)
    for name, us in kernels:
        per_category[categorize(name)] += us / 1000.0 / runs
        per_kernel[name].append(us)
    total = sum(per_category.values())
    top = sorted(per_kernel.items(), key=lambda kv: -sum(kv[1]))[:25]
    return {
        "latency_ms": latency_ms, "kernel_ms_per_run": total, "kernels_per_run": len(kernels) / runs,
        "gpu_busy": total / latency_ms if latency_ms else None,
        "categories": [{"category": c, "ms_per_run": ms, "share": ms / total if total else 0.0}
                       for c, ms in sorted(per_category.items(), key=lambda kv: -kv[1])],
        "top_kernels": [{"kernel": name[:160], "category": categorize(name), "calls_per_run": len(us) / runs,
                         "ms_per_run": sum(us) / 1000.0 / runs} for name, us in top],
    }


def ceilings(model: str, batch: int) -> dict[str, Any]:
    """What this GPU reaches on the model's own matrix products and on a plain copy."""
    import torch

    shapes = {"clip-vit-b32-image": [(batch * 50, 768, 2304), (batch * 50, 768, 768),
                                     (batch * 50, 768, 3072), (batch * 50, 3072, 768)]}.get(model, [])
    shapes.append((8192, 8192, 8192))
    out: dict[str, Any] = {"matmul_fp16": []}
    for m, k, n in shapes:
        a = torch.randn(m, k, device="cuda", dtype=torch.float16)
        b = torch.randn(k, n, device="cuda", dtype=torch.float16)
        ms = cuda_ms(lambda: torch.matmul(a, b))  # noqa: B023 - cuda_ms() calls the lambda before the loop moves on
        out["matmul_fp16"].append({"m": m, "k": k, "n": n, "ms": ms, "tflops": 2 * m * k * n / ms / 1e9})
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = cuda_ms(lambda: dst.copy_(src))
    out["copy_gb_per_s"] = 2 * src.numel() / ms / 1e6  # bytes read plus bytes written
    return out


def cuda_ms(fn: Callable[[], Any], iterations: int = 20) -> float:
    import torch

    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iterations):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# {result['model']}, batch {result['batch']}: CUDA kernel time per forward pass (fp16)", "",
             f"GPU: {result['device']}. Kernel times from CUPTI (torch.profiler), {result['runs']} calls, "
             "without CUDA graphs; latency is device-resident, median of 20, as vlc runs the path "
             "(onnxruntime with its CUDA graph).", "",
             "| path | latency ms | kernel ms | kernels | GPU busy |", "|---|---|---|---|---|"]
    for name, path in result["paths"].items():
        lines.append(f"| {name} | {path['latency_ms']:.2f} | {path['kernel_ms_per_run']:.2f} | "
                     f"{path['kernels_per_run']:.0f} | {path['gpu_busy']:.0%} |")
    categories = sorted({c["category"] for p in result["paths"].values() for c in p["categories"]})
    lines += ["", "Kernel ms per forward pass, by kind of work:", "",
              "| kind | " + " | ".join(result["paths"]) + " |", "|---|" + "---|" * len(result["paths"])]
    for category in categories:
        cells = []
        for path in result["paths"].values():
            ms = next((c["ms_per_run"] for c in path["categories"] if c["category"] == category), 0.0)
            cells.append(f"{ms:.2f}")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    for name, path in result["paths"].items():
        lines += ["", f"Top kernels, {name}:", "", "| kernel | kind | calls | ms |", "|---|---|---|---|"]
        lines += [f"| `{k['kernel'][:90]}` | {k['category']} | {k['calls_per_run']:.0f} | {k['ms_per_run']:.3f} |"
                  for k in path["top_kernels"][:15]]
    if "ceilings" in result:
        c = result["ceilings"]
        lines += ["", "Ceilings on this GPU (CUDA events, median of 20):", "",
                  "| torch.matmul fp16 m × k × n | ms | TFLOP/s |", "|---|---|---|"]
        lines += [f"| {g['m']} × {g['k']} × {g['n']} | {g['ms']:.3f} | {g['tflops']:.0f} |" for g in c["matmul_fp16"]]
        lines += ["", f"Device-to-device copy: {c['copy_gb_per_s']:.0f} GB/s (bytes read plus written)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--paths", default="onnxruntime,onnxruntime-raw,torch-compile")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ceilings", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu/kernel-profile"))
    args = parser.parse_args()
    batch = args.batch or DEFAULT_BATCH.get(args.model, 8)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    for path in paths:
        try:
            parse_path(path)
        except ValueError as exc:
            parser.error(str(exc))
    result: dict[str, Any] = {"model": args.model, "batch": batch, "runs": args.runs,
                              "device": torch.cuda.get_device_name(0), "paths": {}}
    work = Path(".vlc/kernel-profile") / args.model
    for path in paths:
        with torch.inference_mode():  # as the torch target times: once around all of a path's calls
            timed, profiled, facts = session_call(path, args.model, batch, work)
            latency = median_ms(timed)
            summary = summarize(kernel_times(profiled, args.runs), args.runs, latency)
        result["paths"][path] = {**facts, **summary}
        print(f"{path}: {latency:.2f} ms, kernels {summary['kernel_ms_per_run']:.2f} ms", flush=True)
        torch.cuda.empty_cache()
    if args.ceilings:
        result["ceilings"] = ceilings(args.model, batch)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.model}-b{batch}-kernels"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
