"""Bisection for candidates whose intermediate tensors cannot all be exposed at once (a fused
TensorRT engine, an Ascend .om): mark a few tensors as outputs, run, compare, narrow.

The loop is runtime-agnostic: `run_with_outputs(names)` runs the candidate with those tensors
marked and returns their values; `diverged(name, value)` judges one against the reference. It
assumes an error, once made, reaches the tensors after it in topological order, and checks the
node it lands on: if one of its inputs diverges too, the search goes on before that input. So it
ends at a tensor that fails while its node's inputs pass, in O(log n) runs for one bad node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlc.accuracy import Tolerance
from vlc.debug.graph import GraphRunner, Node
from vlc.debug.layerwise import judge, plan


@dataclass
class BisectResult:
    tensor: str | None  # the first divergent tensor; None when the last candidate passes
    index: int | None
    runs: int  # runs of the candidate runtime
    probes: list[tuple[str, bool]] = field(default_factory=list)  # (tensor, diverged) in probe order

    def to_json(self) -> dict:
        return {"tensor": self.tensor, "index": self.index, "runs": self.runs,
                "probes": [{"tensor": t, "diverged": d} for t, d in self.probes]}


class _Prober:
    def __init__(self, run_with_outputs: Callable[[Sequence[str]], Mapping[str, np.ndarray]],
                 diverged: Callable[[str, np.ndarray], bool], names: Sequence[str]):
        self.run_with_outputs, self.diverged, self.names = run_with_outputs, diverged, names
        self.known: dict[int, bool] = {}
        self.result = BisectResult(None, None, 0)

    def probe(self, indices: Sequence[int]) -> None:
        wanted = [i for i in dict.fromkeys(indices) if i not in self.known]
        if not wanted:
            return
        values = self.run_with_outputs([self.names[i] for i in wanted])
        self.result.runs += 1
        for i in wanted:
            self.known[i] = bool(self.diverged(self.names[i], values[self.names[i]]))
            self.result.probes.append((self.names[i], self.known[i]))


def _points(lo: int, hi: int, k: int) -> list[int]:
    """Up to k indices strictly between lo and hi, evenly spread."""
    span = hi - lo - 1
    if span <= 0:
        return []
    k = min(k, span)
    return sorted({lo + 1 + (span * (j + 1)) // (k + 1) for j in range(k)} or {lo + 1})


def bisect_first_divergent(run_with_outputs: Callable[[Sequence[str]], Mapping[str, np.ndarray]],
                           candidates: Sequence[str], diverged: Callable[[str, np.ndarray], bool], *,
                           inputs_of: Mapping[str, Sequence[str]] | None = None,
                           max_outputs: int = 1) -> BisectResult:
    """The first divergent tensor among `candidates` (topological order), marking at most
    `max_outputs` tensors per run. `inputs_of` maps a tensor to the tensors its node reads (those
    not among the candidates are skipped); without it, the first failing tensor of the order is
    taken as it is."""
    max_outputs = max(1, max_outputs)
    prober = _Prober(run_with_outputs, diverged, candidates)
    if not candidates:
        return prober.result
    last = len(candidates) - 1
    prober.probe([last])
    if not prober.known[last]:
        return prober.result
    position = {name: i for i, name in enumerate(candidates)}
    hi = last
    while True:
        lo = -1
        while hi - lo > 1:
            points = _points(lo, hi, max_outputs)
            prober.probe(points)
            failing = [i for i in points if prober.known[i]]
            if failing:
                hi = failing[0]
            passing = [i for i in points if i < hi and not prober.known[i]]
            lo = max(passing, default=lo)
        earlier = [position[n] for n in (inputs_of or {}).get(candidates[hi], ()) if position.get(n, hi) < hi]
        for start in range(0, len(earlier), max_outputs):
            prober.probe(earlier[start:start + max_outputs])
        bad_inputs = [i for i in earlier if prober.known[i]]
        if not bad_inputs:
            break
        hi = min(bad_inputs)  # an input diverges already: the error was made before it
    prober.result.tensor, prober.result.index = candidates[hi], hi
    return prober.result


def bisect_graphs(reference: GraphRunner, candidate: GraphRunner, feeds: Mapping[str, np.ndarray],
                  tolerance: Tolerance, *, max_outputs: int = 1) -> BisectResult:
    """Bisection between two ONNX graphs in ONNX Runtime, `max_outputs` marked tensors per run
    of each: the same loop a compiled candidate goes through, on a runtime that runs here."""
    p = plan(reference, candidate)
    names = [t for _, t in p.tensors]
    cand_of = p.matched
    producer = {o: n for n in p.nodes for o in n.outputs}
    compared = set(names)
    inputs_of = {t: _compared_ancestors(node, producer, compared) for node, t in p.tensors}
    expected: dict[str, np.ndarray] = {}

    def run_with_outputs(marked: Sequence[str]) -> dict[str, np.ndarray]:
        expected.clear()
        expected.update(reference.run(feeds, marked))  # the reference exposes anything, here
        values = candidate.run(feeds, [cand_of[n] for n in marked])
        return {n: values[cand_of[n]] for n in marked}

    def diverged(name: str, value: np.ndarray) -> bool:
        ref = expected[name]
        if not np.issubdtype(np.asarray(ref).dtype, np.floating):
            return False
        return not judge(ref, value, tolerance, name).passed

    return bisect_first_divergent(run_with_outputs, names, diverged, inputs_of=inputs_of,
                                  max_outputs=max_outputs)


def _compared_ancestors(node: Node, producer: Mapping[str, Node], compared: set[str]) -> list[str]:
    """The nearest compared tensors a node reads (through tensors that are not compared)."""
    found: list[str] = []
    seen: set[str] = set()
    stack = list(node.inputs)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in compared:
            found.append(name)
        elif name in producer:
            stack.extend(producer[name].inputs)
    return found


def bisect_rebuilt(reference: GraphRunner, candidate: Any, feeds: Mapping[str, np.ndarray],
                   tolerance: Tolerance, *, max_outputs: int = 1) -> tuple[BisectResult, dict[str, np.ndarray], Any]:
    """Bisection against a compiled artifact (vlc.debug.compiled.RebuiltCandidate): each probe
    rebuilds it with `max_outputs` reference tensors marked. Returns the result, the candidate's
    values of every probed tensor (so the report needs no further build) and the plan."""
    source = GraphRunner(candidate.source_path)
    try:
        p = plan(reference, source)
    finally:
        source.close()
    names = [t for _, t in p.tensors]
    producer = {o: n for n in p.nodes for o in n.outputs}
    compared = set(names)
    inputs_of = {t: _compared_ancestors(node, producer, compared) for node, t in p.tensors}
    expected: dict[str, np.ndarray] = {}
    seen: dict[str, np.ndarray] = {}

    def run_with_outputs(marked: Sequence[str]) -> dict[str, np.ndarray]:
        expected.clear()
        expected.update(reference.run(feeds, marked))
        values = candidate.run_with_outputs(feeds, [p.matched[n] for n in marked])
        out = {n: values[p.matched[n]] for n in marked}
        seen.update(out)
        return out

    def diverged(name: str, value: np.ndarray) -> bool:
        ref = expected[name]
        if not np.issubdtype(np.asarray(ref).dtype, np.floating):
            return False
        return not judge(ref, value, tolerance, name).passed

    result = bisect_first_divergent(run_with_outputs, names, diverged, inputs_of=inputs_of,
                                    max_outputs=max_outputs)
    return result, seen, p
