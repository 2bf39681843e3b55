"""Small test models, usable as model refs `tests/models.py:mlp` (and :cnn, :transformer).

Each factory returns (module, example_inputs) with seeded, non-degenerate weights.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, features: int = 32, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(32, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(image), 1))


class TinyTransformer(nn.Module):
    """Token embedding, pre-norm attention blocks with a padding mask, mean pooling, two heads."""

    def __init__(self, vocab: int = 100, dim: int = 32, heads: int = 4, layers: int = 2, seq: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(1, seq, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, 5)

    def forward(self, token_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(token_ids) + self.position
        x = self.encoder(x, src_key_padding_mask=~mask)
        pooled = (self.norm(x) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        logits = self.classifier(pooled)
        return logits, logits.softmax(-1)


def _batchnorm_stats(module: nn.Module) -> None:
    # Non-trivial running statistics, so BatchNorm folding is actually exercised.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


def mlp():
    torch.manual_seed(0)
    return MLP().eval(), {"x": torch.randn(4, 32)}


def cnn():
    torch.manual_seed(0)
    model = SmallCNN()
    _batchnorm_stats(model)
    return model.eval(), {"image": torch.randn(2, 3, 32, 32)}


def transformer():
    torch.manual_seed(0)
    model = TinyTransformer().eval()
    tokens = torch.randint(0, 100, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 12:] = False
    return model, {"token_ids": tokens, "mask": mask}


@torch.library.custom_op("vlctest::mystery", mutates_args=())
def _mystery(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_mystery.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class UsesCustomOp(nn.Module):
    """A model whose export fails: an operator with no ONNX translation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mystery(x) + 1


def unexportable():
    return UsesCustomOp(), {"x": torch.randn(2, 4)}


class NestedOutputs(nn.Module):
    """Returns a nested tuple: the exporter flattens it, and so must vlc's output naming."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 4)
        self.b = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor):
        return self.a(x), (self.b(x), torch.tanh(self.a(x)))


def nested():
    torch.manual_seed(0)
    return NestedOutputs().eval(), {"x": torch.randn(2, 8)}


class DataDependentBranch(nn.Module):
    """Branches on a tensor's values, as random patch sampling does: dynamo cannot guard on it;
    TorchScript traces the branch its example input takes (the one every normal input takes)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = (x.abs().sum(-1) > 1.0).sum()
        if kept > 3:
            x = x * 2
        return self.proj(x)


def data_dependent():
    torch.manual_seed(0)
    return DataDependentBranch().eval(), {"x": torch.randn(2, 5, 16)}
