"""The @triton.jit kernels. Importing this module imports triton: import it lazily (see ops.py).

Argument order: input pointers, int32 scalars, output pointers, then constexprs — the order
TensorRT's AOT plugins launch with (inputs, extra scalar args, outputs).
"""

import triton
import triton.language as tl

SQRT1_2 = tl.constexpr(0.7071067811865476)  # 1/sqrt(2)
SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)  # sqrt(2/pi)
GELU_TANH_COEF = tl.constexpr(0.044715)


@triton.jit
def silu_kernel(X, N, Y, BLOCK: tl.constexpr):
    """y = x * sigmoid(x) over all N elements."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.sigmoid(x)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def gelu_kernel(X, N, Y, APPROX_TANH: tl.constexpr, BLOCK: tl.constexpr):
    """GELU over all N elements: erf form, or the tanh approximation when APPROX_TANH."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if APPROX_TANH:
        inner = SQRT_2_OVER_PI * (x + GELU_TANH_COEF * x * x * x)
        # 0.5 * (1 + tanh(z)) == sigmoid(2z): no tanh intrinsic needed, and no overflow
        y = x * tl.sigmoid(2.0 * inner)
    else:
        y = 0.5 * x * (1.0 + tl.math.erf(x * SQRT1_2))
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def layernorm_kernel(X, W, B, M, N, Y, EPS: tl.constexpr, HAS_BIAS: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """LayerNorm over the last axis (N) for all M rows; BLOCK_M rows per program.

    Statistics in fp32 (two passes over registers: mean, then centred variance), so fp16
    storage does not overflow the way a decomposed fp16 LayerNorm does.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < M
    col_mask = cols < N
    mask = row_mask[:, None] & col_mask[None, :]
    offs = rows[:, None] * N + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / N
    d = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(d * d, axis=1) / N
    rstd = 1.0 / tl.sqrt(var + EPS)
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    y = d * rstd[:, None] * w[None, :]
    if HAS_BIAS:
        b = tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)
        y = y + b[None, :]
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
