"""Triton kernels for the built-in plugins: SiLU, GELU (erf and tanh) and LayerNorm.

Every kernel covers the whole tensor (a masked 1-D grid over all elements, or every row for
LayerNorm) and computes in fp32 whatever the storage type (fp32 or fp16). Triton is imported
lazily, inside `load()`, so that vlc imports on machines without it; `available()` says whether it
can be used here.

Kernel argument order follows TensorRT's AOT plugin convention: input pointers, then int32
scalars, then output pointers, then compile-time constants. The same kernels serve three callers:
the torch launchers in `ops` (tests and the benchmark), the TensorRT plugin's JIT `impl`, and the
TensorRT plugin's `aot_impl` through `compile_ptx`.
"""

from __future__ import annotations

import importlib.util

KERNELS = ("silu", "gelu", "layernorm")


def available() -> tuple[bool, str]:
    """(ok, reason): Triton importable and a CUDA device for launching kernels."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device (the kernels are tested on a GPU machine: benchmarks/plugins/kernels.py)"
    return True, ""
