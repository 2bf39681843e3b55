"""Layer-wise accuracy: every intermediate tensor of a candidate graph against the reference's,
in windows of exposed tensors, and the first node whose output diverges while its inputs agree."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vlc.accuracy import Tolerance, compare_outputs, no_spread
from vlc.debug.graph import (
    GraphRunner,
    Node,
    candidate_names,
    compared_tensors,
    topological_nodes,
    windows,
)
from vlc.errors import InputError

DEFAULT_WINDOW = 64  # tensors exposed per run at most
# Bytes of exposed tensors one run of one graph may hold: windows shrink below DEFAULT_WINDOW
# when a graph's tensors are large (big batches, high resolutions), so big models fit.
WINDOW_BYTES = 1 << 30
# A reference with no spread (all one value) or a single element has no meaningful cosine; it is
# judged element-wise, and when the tolerance sets no atol/rtol (int8), by this share of its size.
DEGENERATE_RTOL = 1e-2


@dataclass
class TensorComparison:
    """One compared tensor: the reference node that produces it and how far the candidate is."""

    index: int  # node position in topological order
    node: str
    op_type: str
    output: str  # the reference tensor
    candidate_tensor: str  # the candidate tensor read for it (a Q/DQ output, a cast copy, or itself)
    shape: list[int]
    cosine: float
    max_abs: float
    mean_abs: float
    median_abs: float
    max_rel: float
    rel_error: float  # ||candidate - reference|| / ||reference||
    growth: float | None  # rel_error over the worst rel_error of the node's inputs (None: inputs exact)
    passed: bool
    inputs_passed: bool
    reason: str = ""
    covers: list[str] = field(default_factory=list)  # reference nodes one fused candidate op computed

    def to_json(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in asdict(self).items()}


def _json_number(value: Any) -> Any:
    """NaN and infinities as strings: JSON has no literal for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dataclass
class LayerwiseReport:
    reference: str
    candidate: str
    tolerance: Tolerance
    window: int
    nodes: list[TensorComparison] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # reference tensors the candidate lacks
    runs: int = 0  # ONNX Runtime runs, both graphs together
    notes: list[str] = field(default_factory=list)
    mode: str = "layerwise"  # or "bisect": only the probed tensors are in `nodes`
    found: str | None = None  # bisection's answer (a reference tensor), when mode is "bisect"

    @property
    def first_divergent(self) -> TensorComparison | None:
        """The earliest tensor that fails while every input of its node passes; without one (the
        error grew through tensors the candidate lacks), the earliest that fails."""
        if self.found is not None:
            return next((c for c in self.nodes if c.output == self.found), None)
        failing = [c for c in self.nodes if not c.passed]
        return next((c for c in failing if c.inputs_passed), failing[0] if failing else None)

    @property
    def passed(self) -> bool:
        return bool(self.nodes) and all(c.passed for c in self.nodes)

    def to_json(self) -> dict[str, Any]:
        first = self.first_divergent
        return {"reference": self.reference, "candidate": self.candidate, "mode": self.mode,
                "passed": self.passed,
                "tolerance": self.tolerance.to_json(), "window": self.window, "runs": self.runs,
                "compared": len(self.nodes), "unmatched": len(self.unmatched),
                "first_divergent": first.to_json() if first else None,
                "nodes": [c.to_json() for c in self.nodes], "notes": list(self.notes)}


@dataclass
class _Judged:
    passed: bool
    rel_error: float
    reason: str
    stats: Any


def judge(reference: np.ndarray, candidate: np.ndarray, tolerance: Tolerance, name: str = "tensor") -> _Judged:
    """Whether a candidate tensor matches the reference within `tolerance`, with its numbers
    (vlc.accuracy's), for an intermediate tensor rather than a model output: values the reference
    itself holds as Inf (attention-mask fills) must be the same Inf in the candidate and are left
    out of the numbers; a constant or one-element reference is judged element-wise."""
    ref = np.asarray(reference)
    cand = np.asarray(candidate)
    if ref.shape == cand.shape and np.issubdtype(ref.dtype, np.floating) and ref.size:
        ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
        special = ~np.isfinite(ref64)
        if special.any():
            same = np.array_equal(ref64[special], cand64[special], equal_nan=True)
            stats = compare_outputs({name: cand64[~special]}, {name: ref64[~special]}, tolerance).outputs[0]
            stats.shape = list(ref.shape)
            if not same:
                return _Judged(False, math.inf, "NaN/Inf where the reference has other values", stats)
            ref64, cand64 = ref64[~special], cand64[~special]
        else:
            stats = compare_outputs({name: cand64}, {name: ref64}, tolerance).outputs[0]
        rel = _rel_error(ref64, cand64)
        if stats.passed or not ref64.size:
            return _Judged(True, rel, "", stats)
        if np.isfinite(cand64).all() and (ref64.size == 1 or no_spread(ref64, stats.ref_std)):
            bound = (tolerance.atol or 0.0) + (tolerance.rtol if tolerance.rtol is not None
                                               else DEGENERATE_RTOL) * float(np.max(np.abs(ref64)))
            ok = stats.max_abs <= bound
            return _Judged(ok, rel, "" if ok else f"max abs {stats.max_abs:.3g} > {bound:.3g}", stats)
        return _Judged(False, rel, stats.reason, stats)
    stats = compare_outputs({name: cand}, {name: ref}, tolerance).outputs[0]
    rel = 0.0 if stats.passed else math.inf
    return _Judged(stats.passed, rel, stats.reason, stats)


def _rel_error(ref: np.ndarray, cand: np.ndarray) -> float:
    with np.errstate(invalid="ignore", over="ignore"):
        diff = float(np.linalg.norm(cand - ref))
        norm = float(np.linalg.norm(ref))
    if not math.isfinite(diff):
        return math.inf
    if norm == 0:
        return 0.0 if diff == 0 else math.inf
    return diff / norm


@dataclass
class Plan:
    """What to compare: reference tensors in topological order and the candidate's names for them."""

    nodes: list[Node]
    tensors: list[tuple[Node, str]]  # (reference node, reference tensor), matched in the candidate
    matched: dict[str, str]  # reference tensor -> candidate tensor
    unmatched: list[str]


def plan(reference: GraphRunner, candidate: GraphRunner) -> Plan:
    nodes = topological_nodes(reference.proto.graph)
    tensors = compared_tensors(reference.proto, nodes)
    matched = candidate_names([t for _, t in tensors], candidate.proto)
    return Plan(nodes, [(n, t) for n, t in tensors if t in matched], matched,
                [t for _, t in tensors if t not in matched])


class _Errors:
    """Each reference tensor's error so far: compared tensors their own, the rest inherit the
    worst of their producer's inputs (graph inputs and weights are exact)."""

    def __init__(self, nodes: Sequence[Node]):
        self.producer = {o: n for n in nodes for o in n.outputs}
        self.rel: dict[str, float] = {}
        self.ok: dict[str, bool] = {}

    def of(self, name: str) -> tuple[float, bool]:
        if name in self.rel:
            return self.rel[name], self.ok[name]
        node = self.producer.get(name)
        if node is None:
            return 0.0, True
        rel, ok = self.inputs(node)
        self.rel[name], self.ok[name] = rel, ok
        return rel, ok

    def inputs(self, node: Node) -> tuple[float, bool]:
        worst, ok = 0.0, True
        for name in node.inputs:
            rel, passed = self.of(name)
            worst, ok = max(worst, rel), ok and passed
        return worst, ok

    def set(self, name: str, rel: float, ok: bool) -> None:
        self.rel[name], self.ok[name] = rel, ok


# Given reference tensor names and their reference values, the candidate's values by reference
# name; a name left out has no usable counterpart (it is reported as unmatched).
Fetch = Callable[[Sequence[str], Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def compare_layerwise(reference: GraphRunner, candidate: GraphRunner, feeds: Mapping[str, np.ndarray],
                      tolerance: Tolerance, *, window: int = DEFAULT_WINDOW,
                      labels: tuple[str, str] = ("reference", "candidate"),
                      only: set[str] | None = None, window_bytes: int | None = WINDOW_BYTES) -> LayerwiseReport:
    """Compare every matched intermediate tensor (or those in `only`), exposing at most `window`
    per run of each graph, and fewer when they would hold more than `window_bytes`."""
    p = plan(reference, candidate)
    tensors = p.tensors if only is None else [(n, t) for n, t in p.tensors if t in only]
    runs_before = candidate.runs

    def fetch(names: Sequence[str], _: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = candidate.run(feeds, [p.matched[t] for t in names])
        return {t: values[p.matched[t]] for t in names}

    report = compare_tensors(reference, feeds, p.nodes, tensors, p.matched, fetch, tolerance, window=window,
                             labels=labels, window_bytes=window_bytes, unmatched=p.unmatched)
    report.runs += candidate.runs - runs_before
    return report


def compare_tensors(reference: GraphRunner, feeds: Mapping[str, np.ndarray], nodes: Sequence[Node],
                    tensors: Sequence[tuple[Node, str]], candidate_tensor: Mapping[str, str], fetch: Fetch,
                    tolerance: Tolerance, *, window: int = DEFAULT_WINDOW,
                    labels: tuple[str, str] = ("reference", "candidate"), window_bytes: int | None = WINDOW_BYTES,
                    unmatched: Sequence[str] = (), covers: Mapping[str, Sequence[str]] | None = None
                    ) -> LayerwiseReport:
    """The comparison itself, for any candidate: `tensors` (reference node, reference tensor, in
    topological order) run in the reference `window` at a time, their candidate values from
    `fetch` (another ONNX graph, device dumps, a rebuilt engine). `candidate_tensor` names what
    the candidate calls each tensor; `covers`, the reference nodes a candidate op computed in one
    fused kernel. Tensors `fetch` leaves out join `unmatched`."""
    if window < 1:
        raise InputError(f"--window {window} must be >= 1", fix="expose at least one tensor per run")
    report = LayerwiseReport(labels[0], labels[1], tolerance, window, unmatched=list(unmatched))
    errors = _Errors(nodes)
    runs_before = reference.runs
    sizes: list[int] = []
    for chunk in windows(tensors, window, budget=window_bytes, sizes=sizes):
        ref_values = reference.run(feeds, [t for _, t in chunk])
        cand_values = fetch([t for _, t in chunk], ref_values)
        held = [np.asarray(v).nbytes for v in [*ref_values.values(), *cand_values.values()]]
        sizes.append(max(held, default=0))
        for node, tensor in chunk:
            if tensor not in cand_values:
                report.unmatched.append(tensor)
                continue
            compared = _compare_one(node, tensor, candidate_tensor.get(tensor, tensor), ref_values[tensor],
                                    cand_values[tensor], tolerance, errors)
            if compared is not None:
                compared.covers = list((covers or {}).get(tensor, ()))
                report.nodes.append(compared)
        del ref_values, cand_values
    report.runs = reference.runs - runs_before
    return report


def _compare_one(node: Node, tensor: str, cand_name: str, ref: np.ndarray, cand: np.ndarray,
                 tolerance: Tolerance, errors: _Errors) -> TensorComparison | None:
    ref, cand = np.asarray(ref), np.asarray(cand)
    if not np.issubdtype(ref.dtype, np.floating):
        return None  # shape and index computations: not numerics
    judged = judge(ref, cand, tolerance, tensor)
    worst_in, inputs_ok = errors.inputs(node)
    errors.set(tensor, judged.rel_error, judged.passed)
    growth = judged.rel_error / worst_in if 0 < worst_in < math.inf else None
    s = judged.stats
    return TensorComparison(node.index, node.name, node.op_type, tensor, cand_name, list(ref.shape),
                            s.cosine, s.max_abs, s.mean_abs, s.median_abs, s.max_rel, judged.rel_error,
                            growth, judged.passed, inputs_ok, judged.reason)
