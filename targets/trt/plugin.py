"""Registers the built-in `trt` and `trt-rtx` targets (loaded like any third-party plugin)."""

from __future__ import annotations

from typing import Callable

from vlc.hookspecs import hookimpl
from vlc.target import Target


@hookimpl
def register_targets(register: Callable[[Target], None]) -> None:
    from vlc.targets.trt.target import TrtRtxTarget, TrtTarget

    register(TrtTarget())
    register(TrtRtxTarget())
