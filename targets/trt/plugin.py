"""Registers the built-in `trt` and `trt-rtx` targets and their parser rewrites (loaded like any third-party plugin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlc.hookspecs import hookimpl
from vlc.target import Target
from vlc.targets.trt.target import TrtRtxTarget, TrtTarget


@hookimpl
def register_targets(register: Callable[[Target], None]) -> None:
    register(TrtTarget())
    register(TrtRtxTarget())


@hookimpl
def register_passes(register: Callable[[Any], None]) -> None:
    from vlc.targets.trt import parser_rewrites  # local: startup (numpy and the rules, for commands that run passes)

    parser_rewrites.register_passes(register)


@hookimpl
def register_pass_sets(register: Callable[[Any], None]) -> None:
    from vlc.targets.trt import parser_rewrites  # local: startup (numpy and the rules, for commands that run passes)

    parser_rewrites.register_pass_sets(register)
