"""Registers the ascend310 and ascend310p targets, their patch set and the `vlc ascend` command group."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlc.hookspecs import hookimpl
from vlc.targets.ascend.commands import ascend_app
from vlc.targets.ascend.patch_set import ATC_PATCHES
from vlc.targets.ascend.target import Ascend310, Ascend310P


@hookimpl
def register_targets(register: Callable[[Any], None]) -> None:
    register(Ascend310())
    register(Ascend310P())


@hookimpl
def register_pass_sets(register: Callable[[Any], None]) -> None:
    register(ATC_PATCHES)


@hookimpl
def register_commands(app: Any) -> None:
    app.add_typer(ascend_app, name="ascend")
