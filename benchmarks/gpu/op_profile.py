#!/usr/bin/env python3
"""Where the time goes: a per-operator profile of vlc's onnxruntime CUDA fp16 artifact.

    python3 benchmarks/gpu/op_profile.py clip-vit-b32-image --batch 1024 --out DIR

Writes DIR/<model>-b<batch>.json and .md: ONNX Runtime's own profiler per operator type, per run,
over 10 runs after one warm-up, without a CUDA graph. On the CUDA provider ONNX Runtime's pip
build records each node's host-side (launch) time, not its GPU kernel time, so the table shows
which operators the graph spends its launches on, not GPU time; kernel time needs CUPTI (a
profiler such as Nsight Systems or torch.profiler's CUDA activity around the same runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlc.frontend.pipeline import prepare
from vlc.plugin_manager import get_target
from vlc.spec import Precision, TargetSpec
from vlc.timing import ProfileSettings

DEFAULT_BATCH = {"clip-vit-b32-image": 1024, "vilbert-vqa": 256, "mobilevit-s": 32}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu/op-profile"))
    args = parser.parse_args()
    batch = args.batch or DEFAULT_BATCH.get(args.model, 8)
    source = prepare(args.model)
    target = get_target("onnxruntime")
    spec = TargetSpec("onnxruntime", precision=Precision.FP16, device="cuda", batch=(1, batch, batch))
    artifact = target.compile(source, spec, Path(".vlc/op-profile") / args.model)
    feeds = source.generate_inputs(batch)
    result = target.profile(artifact, feeds, ProfileSettings(warmup=5, iterations=20, per_layer=True))
    profile = result.extra["per_operator"]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.model}-b{batch}"
    stem.with_suffix(".json").write_text(json.dumps({
        "model": args.model, "batch": batch, "fusions": artifact.manifest["extra"].get("fusions"),
        "compute_median_ms": result.breakdown["compute"].median, "per_operator": profile}, indent=2))
    lines = [f"# {args.model}, batch {batch}: onnxruntime CUDA fp16, per operator type", "",
             f"Device-resident latency with CUDA graph: {result.breakdown['compute'].median:.2f} ms "
             f"(median). ONNX Runtime's profiler, without the graph, records {profile['total_ms']:.2f} ms "
             "per run of host-side node time (on CUDA: launches, not GPU kernel time).", "",
             "| operator | nodes | ms per run | share |", "|---|---|---|---|"]
    lines += [f"| {o['op']} | {o['nodes']} | {o['ms_per_run']:.3f} | {o['share']:.1%} |"
              for o in profile["operators"]]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
