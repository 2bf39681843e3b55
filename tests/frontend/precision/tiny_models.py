"""Tiny, non-degenerate test models exported to ONNX (opset 17, dynamic batch).

Shared by the precision tests and the trt target tests (tests/targets/trt/conftest.py loads
this file by path). Weights come from torch's default initialisation under a fixed seed; the
inputs' generators give outputs with real spread.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from vlc.model import BATCH, InputSpec

SEQ, DIM = 8, 32


def _torch():
    import torch

    return torch


def mlp_module():
    torch = _torch()
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 10)).eval()


def cnn_module():
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.SiLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():  # running stats that are not the identity
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def transformer_module(decomposed_layernorm: bool = True):
    """One pre-norm encoder block: LayerNorm (native or decomposed) + masked attention with
    Softmax + GELU MLP. The additive mask uses float32's minimum (-3.4e38), as HF models do."""
    torch = _torch()
    nn = torch.nn

    class DecomposedLayerNorm(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim) + 0.1 * torch.randn(dim))
            self.bias = nn.Parameter(0.1 * torch.randn(dim))

        def forward(self, x):
            mean = x.mean(-1, keepdim=True)
            var = (x - mean).pow(2).mean(-1, keepdim=True)
            return (x - mean) / torch.sqrt(var + 1e-12) * self.weight + self.bias

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = DecomposedLayerNorm(DIM) if decomposed_layernorm else nn.LayerNorm(DIM)
            self.ln2 = nn.LayerNorm(DIM)
            self.qkv = nn.Linear(DIM, 3 * DIM)
            self.proj = nn.Linear(DIM, DIM)
            self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))
            self.heads = 4

        def forward(self, x, mask):
            b, s, d = x.shape
            h = self.ln1(x)
            q, k, v = self.qkv(h).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5
            scores = scores + (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min
            attn = torch.softmax(scores, dim=-1) @ v
            x = x + self.proj(attn.transpose(1, 2).reshape(b, s, d))
            return x + self.mlp(self.ln2(x))

    torch.manual_seed(0)
    return Block().eval()


MODELS = {
    "mlp": (mlp_module, [InputSpec("x", (BATCH, 32))], ["y"]),
    "cnn": (cnn_module, [InputSpec("image", (BATCH, 3, 16, 16))], ["logits"]),
    "transformer": (transformer_module,
                    [InputSpec("x", (BATCH, SEQ, DIM)),
                     InputSpec("mask", (BATCH, SEQ), "float32", "int", 0, 2)],  # 1 attend, 0 masked
                    ["y"]),
}


def input_specs(name: str) -> list[InputSpec]:
    return MODELS[name][1]


def export(name: str, path: Path, **kwargs) -> Path:
    """Export model `name` to `path` with a dynamic batch axis; returns the path."""
    torch = _torch()
    factory, specs, outputs = MODELS[name]
    module = factory(**kwargs)
    example = tuple(torch.from_numpy(v) for v in generate(name, 2).values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), input_names=[s.name for s in specs],
                          output_names=outputs, opset_version=17, dynamo=False,
                          dynamic_axes={s.name: {0: BATCH} for s in specs})
    return path


def generate(name: str, batch: int, seed: int = 0):
    """Feeds for model `name`: normal floats; the transformer's 0/1 mask always keeps key 0."""
    from vlc.model import generate_from_specs

    feeds = generate_from_specs(MODELS[name][1], batch, seed)
    if "mask" in feeds:
        feeds["mask"][:, 0] = 1.0  # every query sees at least one key
    return feeds
