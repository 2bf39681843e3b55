"""Registers every Ascend patch as a named graph pass (`vlc export --passes ascend-opset,...`).

Run as a plain pass, a patch sees the model's metadata for its context (CANN version, batch:
keys `vlc.ascend.cann`, `vlc.ascend.batch`) or CANN 6 rules with the batch kept dynamic; the
Ascend targets run the same patches with the build's own context, in their pass set's order
(registered by the Ascend target's plugin).
"""

from __future__ import annotations

from collections.abc import Callable

from vlc.ascend_patches.core import all_patches
from vlc.frontend.passes import GraphPass
from vlc.hookspecs import hookimpl


@hookimpl
def register_passes(register: Callable[[GraphPass], None]) -> None:
    for p in all_patches():
        register(p)
