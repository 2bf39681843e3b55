#!/usr/bin/env python3
"""MobileViT-S on ONNX Runtime CUDA: cuDNN's convolution algorithm search and where the conv bias is added.

    python3 benchmarks/gpu/conv_settings.py [--model mobilevit-s] [--batch 1,16,32] [--out FILE.md]

Three fp16 graphs of the onnxruntime target: the raw export (no passes), vlc's graph without the
conv-bias-add pass (as vlc built it before that pass) and vlc's graph, each under the CUDA
provider's `cudnn_conv_algo_search` modes (-O conv_algo). Timed as vlc runs them: IOBinding,
CUDA graph, device-resident, host clock around synchronised runs, warm-up 5, 30 runs, median.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from kernel_profile import median_ms  # this folder's profiler: the same warm-up and host clock

from vlc.frontend.pipeline import FrontendOptions, prepare
from vlc.plugin_manager import get_target
from vlc.spec import Precision, TargetSpec
from vlc.targets.onnxruntime.gpu_path import FUSION_PASSES, CudaSessions

WITHOUT_CONV_BIAS_ADD = ",".join(p for p in FUSION_PASSES if p != "conv-bias-add")
# graph name -> (front end, target options)
GRAPHS: dict[str, tuple[FrontendOptions, dict[str, Any]]] = {
    "raw export": (FrontendOptions(simplify=False, passes=()), {"fusions": False, "islands": "all"}),
    "vlc without conv-bias-add": (FrontendOptions(), {"fusions": WITHOUT_CONV_BIAS_ADD}),
    "vlc": (FrontendOptions(), {}),
}
SEARCHES = {"raw export": ("exhaustive", "heuristic"),
            "vlc without conv-bias-add": ("exhaustive", "heuristic", "default"),
            "vlc": ("exhaustive", "heuristic")}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilevit-s")
    parser.add_argument("--batch", default="1,16,32")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    lines = [f"# {args.model} fp16 on ONNX Runtime CUDA: conv algorithm search and conv-bias-add", "",
             f"GPU: {torch.cuda.get_device_name()}. Command: `python3 benchmarks/gpu/conv_settings.py "
             f"--model {args.model} --batch {args.batch}`. Device-resident median ms.", "",
             "| graph | -O conv_algo | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|---|---|" + "---|" * len(batches)]
    target = get_target("onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        for graph, (frontend, options) in GRAPHS.items():
            source = prepare(args.model, options=frontend)
            cells: dict[str, list[str]] = {search: [] for search in SEARCHES[graph]}
            for batch in batches:
                spec = TargetSpec("onnxruntime", precision=Precision.FP16, device="cuda",
                                  batch=(batch, batch, batch), options=dict(options))
                artifact = target.compile(source, spec, Path(tmp) / f"{graph}-{batch}".replace(" ", "_"))
                feeds = source.generate_inputs(batch)
                for search in SEARCHES[graph]:
                    sessions = CudaSessions(artifact.file("main"), {**artifact.spec.options, "conv_algo": search},
                                            cuda_graph=True)
                    cells[search].append(f"{median_ms(sessions.device_resident(feeds), iterations=30):.3f}")
                    sessions.close()
            for search, values in cells.items():
                lines.append(f"| {graph} | {search} | " + " | ".join(values) + " |")
                print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
