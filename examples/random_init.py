"""Seeded random weights that keep activations at unit scale.

Deployment checks on a randomly initialised model prove something only when its outputs
depend on its inputs as a trained model's do. Small initialisations (BERT's 0.02 everywhere)
leave attention uniform and outputs nearly the same for every input, so a broken engine
could pass; the examples therefore scale their linear layers to keep unit variance.

Biases and normalisation parameters are small random values, never exactly 0 and 1: a
trained checkpoint has none of those, and constants a simplifier can fold (an Add of zeros,
a LayerNorm scale of ones) would let benchmarks time a graph that no real model produces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

BIAS_STD = 0.02  # biases and norm shifts: small, as in trained vision transformers
NORM_SCALE_STD = 0.1  # norm scales: 1 + normal(0, 0.1)
NORMS = (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator inside the block and restore it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def lecun_linears(model: nn.Module) -> None:
    """Every nn.Linear: weights normal(0, 1/sqrt(fan_in)) (unit-variance outputs), small random bias."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, m.in_features ** -0.5)
            if m.bias is not None:
                m.bias.normal_(0.0, BIAS_STD)


@torch.no_grad()
def jittered_norms(model: nn.Module) -> None:
    """Every affine LayerNorm / BatchNorm / GroupNorm: scale 1 + normal(0, 0.1), shift normal(0, 0.02)."""
    for m in model.modules():
        if isinstance(m, NORMS) and getattr(m, "weight", None) is not None:
            m.weight.normal_(1.0, NORM_SCALE_STD)
            if m.bias is not None:
                m.bias.normal_(0.0, BIAS_STD)
