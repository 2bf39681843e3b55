"""Registers the built-in `onnxruntime` target and its graph passes (loaded as a default plugin)."""

from __future__ import annotations

import vlc.hookspecs
from vlc.targets.onnxruntime import fusions
from vlc.targets.onnxruntime.target import OnnxRuntimeTarget


@vlc.hookspecs.hookimpl
def register_targets(register) -> None:
    register(OnnxRuntimeTarget())


@vlc.hookspecs.hookimpl
def register_passes(register) -> None:
    fusions.register_passes(register)


@vlc.hookspecs.hookimpl
def register_pass_sets(register) -> None:
    fusions.register_pass_sets(register)
