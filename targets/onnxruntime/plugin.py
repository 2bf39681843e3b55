"""Registers the built-in `onnxruntime` target (loaded as a default plugin)."""

from __future__ import annotations

import vlc.hookspecs
from vlc.targets.onnxruntime.target import OnnxRuntimeTarget


@vlc.hookspecs.hookimpl
def register_targets(register) -> None:
    register(OnnxRuntimeTarget())
