"""Registers the built-in `torch` target (loaded as a default plugin)."""

from __future__ import annotations

import vlc.hookspecs
from vlc.targets.torch.target import TorchTarget


@vlc.hookspecs.hookimpl
def register_targets(register) -> None:
    register(TorchTarget())
