#!/usr/bin/env python3
"""How ONNX Runtime's CUDA kernels can run CLIP's MLP input projection with its bias and QuickGELU.

    python3 benchmarks/gpu/mlp_epilogue.py [--out FILE.md]

CLIP ViT-B/32's fc1 at batch 1024 (a 51,200 x 768 by 768 x 3,072 fp16 product) as small ONNX
graphs, each run by ONNX Runtime's CUDA provider with a CUDA graph, inputs and outputs bound on the
GPU; host clock around synchronised runs, warm-up 5, 30 timed runs, median and min. The fused
bias + GELU operators (FastGelu, BiasGelu) compute other functions than QuickGELU and cannot
replace it; they show what one fused elementwise pass costs with ONNX Runtime's vectorized kernels.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

M, K, N = 1024 * 50, 768, 3072


def graph(nodes: list[onnx.NodeProto], opset: int = 21) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float16)
    bias = (rng.standard_normal(N) * 0.1).astype(np.float16)
    used = {i for n in nodes for i in n.input}
    inits = [numpy_helper.from_array(a, name) for name, a in
             (("W", weight), ("b", bias), ("alpha", np.array(1.702, np.float16))) if name in used]
    body = helper.make_graph(nodes, "fc1", [helper.make_tensor_value_info("X", TensorProto.FLOAT16, [M, K])],
                             [helper.make_tensor_value_info("Y", TensorProto.FLOAT16, [M, N])], inits)
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(body, opset_imports=opsets, ir_version=10)


def node(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    domain = "com.microsoft" if op in ("QuickGelu", "FastGelu", "BiasGelu") else ""
    return helper.make_node(op, inputs, [output], domain=domain, **attrs)


VARIANTS = {
    "MatMul": graph([node("MatMul", ["X", "W"], "Y")]),
    "MatMul + Add": graph([node("MatMul", ["X", "W"], "t"), node("Add", ["t", "b"], "Y")]),
    "Gemm with bias": graph([node("Gemm", ["X", "W", "b"], "Y")]),
    "MatMul + Add + QuickGelu (vlc's graph)": graph([node("MatMul", ["X", "W"], "t"), node("Add", ["t", "b"], "u"),
                                                    node("QuickGelu", ["u"], "Y", alpha=1.702)]),
    "Gemm with bias + QuickGelu": graph([node("Gemm", ["X", "W", "b"], "u"),
                                         node("QuickGelu", ["u"], "Y", alpha=1.702)]),
    "MatMul + Add + Mul + Sigmoid + Mul": graph([node("MatMul", ["X", "W"], "t"), node("Add", ["t", "b"], "u"),
                                                 node("Mul", ["u", "alpha"], "v"), node("Sigmoid", ["v"], "s"),
                                                 node("Mul", ["u", "s"], "Y")]),
    "MatMul + Add + Swish (opset 24)": graph([node("MatMul", ["X", "W"], "t"), node("Add", ["t", "b"], "u"),
                                              node("Swish", ["u"], "Y", alpha=1.702)], opset=24),
    "MatMul + FastGelu(bias) [other function]": graph([node("MatMul", ["X", "W"], "t"),
                                                       node("FastGelu", ["t", "b"], "Y")]),
    "MatMul + BiasGelu [other function]": graph([node("MatMul", ["X", "W"], "t"), node("BiasGelu", ["t", "b"], "Y")]),
}


def time_variant(model: onnx.ModelProto, x, y) -> tuple[float, float]:
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
    binding = session.io_binding()
    binding.bind_input("X", "cuda", 0, np.float16, [M, K], x.data_ptr())
    binding.bind_output("Y", "cuda", 0, np.float16, [M, N], y.data_ptr())
    run_options = ort.RunOptions()
    for _ in range(5):
        session.run_with_iobinding(binding, run_options)
    torch.cuda.synchronize()
    samples = []
    for _ in range(30):
        start = time.perf_counter()
        session.run_with_iobinding(binding, run_options)  # ONNX Runtime synchronizes its stream
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples), min(samples)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    y = torch.empty(M, N, device="cuda", dtype=torch.float16)
    lines = [f"# CLIP ViT-B/32 fc1 at batch 1024 ({M} x {K} x {N}, fp16) on ONNX Runtime CUDA", "",
             f"GPU: {torch.cuda.get_device_name()}. Command: `python3 benchmarks/gpu/mlp_epilogue.py`.", "",
             "| graph | median ms | min ms |", "|---|---|---|"]
    for name, model in VARIANTS.items():
        try:
            median, fastest = time_variant(model, x, y)
            lines.append(f"| {name} | {median:.3f} | {fastest:.3f} |")
        except Exception as exc:  # noqa: BLE001 - an operator this ONNX Runtime build lacks: say so, measure the rest
            lines.append(f"| {name} | failed: {str(exc).splitlines()[0][:100]} | |")
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
