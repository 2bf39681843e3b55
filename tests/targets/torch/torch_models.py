"""Models with the output structures forward may return: dicts and nested tuples."""

from __future__ import annotations

import torch
from torch import nn


class DictHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 12)
        self.cls = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.body(x))
        return {"logits": self.cls(h), "embedding": h}


class NestedHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 4)
        self.b = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a = self.a(x)
        return a, (self.b(x), a.sum(-1, keepdim=True))


def dict_heads():
    torch.manual_seed(3)
    return DictHeads().eval(), {"x": torch.randn(2, 6)}


def nested_heads():
    torch.manual_seed(4)
    return NestedHeads().eval(), {"x": torch.randn(2, 6)}
