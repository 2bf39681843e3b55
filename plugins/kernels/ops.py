"""Torch launchers for the Triton kernels, and ahead-of-time PTX compilation for TensorRT.

Nothing here imports triton at module import; each function does so when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ELEMENTWISE_BLOCK = 1024
# LayerNorm: one program holds at most this many fp32 values (BLOCK_M x BLOCK_N).
LAYERNORM_TILE = 4096
LAYERNORM_MAX_N = 16384


def _kernels() -> Any:
    from vlc.plugins.kernels import triton_kernels  # local: loads triton, absent without a CUDA build

    return triton_kernels


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def layernorm_blocks(n: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for a row length n."""
    if n > LAYERNORM_MAX_N:
        raise ValueError(f"LayerNorm kernel handles rows up to {LAYERNORM_MAX_N} elements, got {n}")
    block_n = _next_pow2(n)
    block_m = max(1, LAYERNORM_TILE // block_n)
    num_warps = 4 if block_n <= 1024 else 8 if block_n <= 4096 else 16
    return block_m, block_n, num_warps


def _check(x: Any) -> Any:
    import torch

    if x.dtype not in (torch.float32, torch.float16):
        raise TypeError(f"kernels take float32 or float16 tensors, got {x.dtype}")
    return x.contiguous()


def silu(x: Any) -> Any:
    import triton

    x = _check(x)
    y = x.new_empty(x.shape)
    n = x.numel()
    if n:
        _kernels().silu_kernel[(triton.cdiv(n, ELEMENTWISE_BLOCK),)](x, n, y, BLOCK=ELEMENTWISE_BLOCK)
    return y


def gelu(x: Any, approximate: str = "none") -> Any:
    import triton

    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    x = _check(x)
    y = x.new_empty(x.shape)
    n = x.numel()
    if n:
        _kernels().gelu_kernel[(triton.cdiv(n, ELEMENTWISE_BLOCK),)](
            x, n, y, APPROX_TANH=approximate == "tanh", BLOCK=ELEMENTWISE_BLOCK)
    return y


def layer_norm(x: Any, weight: Any, bias: Any | None = None, eps: float = 1e-5) -> Any:
    """LayerNorm over the last axis of x (any leading shape)."""
    import triton

    x = _check(x)
    n = x.shape[-1]
    if weight.numel() != n or (bias is not None and bias.numel() != n):
        raise ValueError(f"weight/bias must have {n} elements (the last axis of x)")
    m = x.numel() // n if n else 0
    y = x.new_empty(x.shape)
    if m:
        block_m, block_n, warps = layernorm_blocks(n)
        weight = weight.contiguous()
        bias_arg = bias.contiguous() if bias is not None else weight  # unread when HAS_BIAS=False
        _kernels().layernorm_kernel[(triton.cdiv(m, block_m),)](
            x, weight, bias_arg, m, n, y, EPS=float(eps), HAS_BIAS=bias is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return y


# ---- ahead-of-time compilation (TensorRT aot_impl) -----------------------------------------

@dataclass(frozen=True)
class CompiledKernel:
    name: str
    ptx: str
    num_warps: int
    shared: int
    block: int  # elements per program (elementwise) or rows per program (LayerNorm)


TRITON_DTYPES = {"float32": "fp32", "float16": "fp16"}


def compile_ptx(kind: str, dtype: str, capability: tuple[int, int] = (8, 6), *,
                approximate: str = "none", eps: float = 1e-5, n: int | None = None,
                has_bias: bool = True) -> CompiledKernel:
    """Compile one kernel to PTX for a compute capability without launching it (no GPU needed).

    kind: silu | gelu | layernorm. dtype: float32 | float16. LayerNorm needs n (the row length),
    which the TensorRT plugin takes from the static last dimension.
    """
    import triton
    from triton.backends.compiler import GPUTarget

    k = _kernels()
    t = TRITON_DTYPES[dtype]
    constexprs: dict[str, float | int | bool]
    if kind == "silu":
        fn, block, warps = k.silu_kernel, ELEMENTWISE_BLOCK, 4
        signature = {"X": f"*{t}", "N": "i32", "Y": f"*{t}", "BLOCK": "constexpr"}
        constexprs = {"BLOCK": block}
    elif kind == "gelu":
        fn, block, warps = k.gelu_kernel, ELEMENTWISE_BLOCK, 4
        signature = {"X": f"*{t}", "N": "i32", "Y": f"*{t}", "APPROX_TANH": "constexpr",
                     "BLOCK": "constexpr"}
        constexprs = {"APPROX_TANH": approximate == "tanh", "BLOCK": block}
    elif kind == "layernorm":
        if n is None:
            raise ValueError("layernorm needs the row length n")
        block, block_n, warps = layernorm_blocks(n)
        fn = k.layernorm_kernel
        signature = {"X": f"*{t}", "W": f"*{t}", "B": f"*{t}", "M": "i32", "N": "i32",
                     "Y": f"*{t}", "EPS": "constexpr", "HAS_BIAS": "constexpr",
                     "BLOCK_M": "constexpr", "BLOCK_N": "constexpr"}
        constexprs = {"EPS": float(eps), "HAS_BIAS": has_bias, "BLOCK_M": block, "BLOCK_N": block_n}
    else:
        raise ValueError(f"unknown kernel {kind!r}")
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    major, minor = capability
    compiled = triton.compile(src, target=GPUTarget("cuda", major * 10 + minor, 32),
                              options={"num_warps": warps})
    return CompiledKernel(compiled.metadata.name, compiled.asm["ptx"], compiled.metadata.num_warps,
                          compiled.metadata.shared, block)
