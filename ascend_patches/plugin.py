"""Registers every Ascend patch as a named graph pass (`vlc export --passes ascend-opset,...`).

Run as a plain pass, a patch sees the model's metadata for its context (CANN version, batch:
keys `vlc.ascend.cann`, `vlc.ascend.batch`) or CANN 6 rules with the batch kept dynamic; the
Ascend targets run the same patches with the build's own context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlc.ascend_patches.core import Patch, all_patches, context_from_metadata
from vlc.frontend.passes import GraphPass
from vlc.hookspecs import hookimpl


def as_graph_pass(p: Patch) -> GraphPass:
    def run(model: Any) -> Any:
        import onnx_ir as ir

        proto = ir.to_proto(model)
        patched, _ = p.apply(proto, context_from_metadata(proto))
        return ir.from_proto(patched)

    return GraphPass(p.name, p.summary, run)


@hookimpl
def register_passes(register: Callable[[GraphPass], None]) -> None:
    for p in all_patches():
        register(as_graph_pass(p))
