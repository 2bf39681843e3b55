"""Seeded random weights that keep activations at unit scale.

Deployment checks on a randomly initialised model prove something only when its outputs
depend on its inputs as a trained model's do. Small initialisations (BERT's 0.02 everywhere)
leave attention uniform and outputs nearly the same for every input, so a broken engine
could pass; the examples therefore scale their linear layers to keep unit variance.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator inside the block and restore it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def lecun_linears(model: nn.Module) -> None:
    """Every nn.Linear: weights normal(0, 1/sqrt(fan_in)), zero bias (unit-variance outputs)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, m.in_features ** -0.5)
            if m.bias is not None:
                m.bias.zero_()
