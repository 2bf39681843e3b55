"""Named graph passes and the pass manager that runs them and counts nodes per pass."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vlc.errors import InputError


@dataclass(frozen=True)
class GraphPass:
    """A named rewrite of an onnx_ir Model; it must keep numerics (tested in ONNX Runtime).

    `fn` changes the model in place and may return a (new) model; None means "same model".
    """

    name: str
    summary: str
    fn: Callable[[Any], Any]


@dataclass(frozen=True)
class PassReport:
    name: str
    nodes_before: int
    nodes_after: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after, "seconds": round(self.seconds, 4)}


def count_nodes(model: Any) -> int:
    """Nodes in the main graph and its subgraphs."""
    import onnx_ir as ir

    return sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))


def resolve_passes(names: Iterable[str]) -> list[GraphPass]:
    from vlc.plugin_manager import passes

    registry = passes()
    resolved = []
    for name in names:
        if name not in registry:
            raise InputError(f"unknown pass '{name}'",
                             fix=f"available passes: {', '.join(sorted(registry))}")
        resolved.append(registry[name])
    return resolved


def run_passes(model: Any, names: Iterable[str]) -> tuple[Any, list[PassReport]]:
    reports = []
    for graph_pass in resolve_passes(names):
        before = count_nodes(model)
        start = time.perf_counter()
        result = graph_pass.fn(model)
        model = model if result is None else result
        reports.append(PassReport(graph_pass.name, before, count_nodes(model),
                                  time.perf_counter() - start))
    return model, reports
