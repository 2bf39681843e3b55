"""The Triton kernels on the whole tensor against torch, fp32 and fp16 (GPU only).

The full sweep over every example shape, with timings, is benchmarks/plugins/kernels.py; this is
the quick gate. Without triton or a CUDA device the tests are skipped with the reason printed.
"""

from __future__ import annotations

import pytest

from vlc.plugins import kernels

OK, WHY = kernels.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"GPU kernel tests skipped: {WHY}")

# odd sizes so the last block is partial; shapes from MobileViT-S, ViLBERT and CLIP
SHAPES = [(1, 16, 128, 128), (4, 256, 144), (1, 32, 3072), (3, 77, 512), (5, 1000 + 7)]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_match_torch_on_the_whole_tensor(shape, dtype):
    import torch
    import torch.nn.functional as F

    from vlc.plugins.kernels import ops

    dt = getattr(torch, dtype)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == "float32" else dict(atol=1e-2, rtol=1e-2)
    x = (torch.randn(shape, device="cuda") * 2).to(dt)
    torch.testing.assert_close(ops.silu(x).float(), F.silu(x.float()), **tol)
    for approx in ("none", "tanh"):
        torch.testing.assert_close(ops.gelu(x, approx).float(), F.gelu(x.float(), approximate=approx), **tol)
    n = shape[-1]
    w = (torch.rand(n, device="cuda") + 0.5).to(dt)
    b = (torch.rand(n, device="cuda") - 0.5).to(dt)
    ln_tol = dict(atol=1e-4, rtol=1e-4) if dtype == "float32" else tol
    expected = F.layer_norm(x.float(), (n,), w.float(), b.float(), 1e-5)
    torch.testing.assert_close(ops.layer_norm(x, w, b, 1e-5).float(), expected, **ln_tol)
    expected = F.layer_norm(x.float(), (n,), w.float(), None, 1e-12)
    torch.testing.assert_close(ops.layer_norm(x, w, None, 1e-12).float(), expected, **ln_tol)
