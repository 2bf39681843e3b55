"""Accuracy-driven fp32 islands (`islands=auto`): the fewest nodes kept in fp32 that meet a goal.

The static islands (lowp.KEEP_FP32_OPS by op type, decomposed LayerNorm/RMSNorm patterns) are
where the search starts: they are safe but cost Casts and keep fusable chains apart. Each
island is a *unit* (one node, or one decomposed-LayerNorm pattern as a whole), and the search
measures in ONNX Runtime, on the conversion's own check inputs, what releasing units to
fp16/bf16 costs:

1. the static conversion must meet the goal (else there is nothing to release from);
2. everything released at once: if that meets the goal, no unit needs fp32;
3. each unit released alone (its *sensitivity*: how much the relative L2 error of the output it
   hurts most grows over the static islands'); a unit that misses the goal alone stays in fp32;
4. the units sorted from least to most sensitive, the longest prefix that meets the goal
   released together (bisection over the prefix length);
5. every unit still kept tried once more on top of that (greedy), least sensitive first.

For fp16, a native normalization (LayerNormalization, GroupNormalization, ...) whose input lies
more than NORM_DEVIATION_LIMIT from its mean on the check inputs is never released: fp16 kernels
may square the centred input, past 65504 there (what TensorRT warns about for LayerNorms after
attention), and the emulation sees only the op's output.

Each measurement converts the graph with lowp.to_low_precision (the kept units named in
`keep_nodes`) and checks it as the conversion check does: through check.emulate_low_precision
(every low-precision tensor rounded and ranged where produced), and for fp16 also as ONNX
Runtime's CPU runs it; a measurement passes when both meet the goal.
The cost is bounded by `max_evaluations` runs; past `max_groups` units, neighbouring units
(in graph order) are measured as groups, and the greedy step splits kept groups again while
the budget lasts. The result is minimal in the greedy sense (no single kept unit can be
released on top of it), not the global minimum, which would take exponentially many runs.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from vlc.accuracy import AccuracyReport, Tolerance, compare_outputs, default_tolerance, tolerance_with
from vlc.errors import InputError
from vlc.frontend.precision.check import emulate_low_precision, run_onnx
from vlc.frontend.precision.lowp import (
    KEEP_FP32_OPS,
    TYPE_FIXED_OPS,
    ConversionCache,
    LowPrecisionStats,
    to_low_precision,
)

ISLAND_MODES = ("static", "auto")
DEFAULT_MAX_EVALUATIONS = 120
DEFAULT_MAX_GROUPS = 48
LARGE_MODEL_BYTES = 1_800_000_000  # protobuf's 2 GiB limit: such graphs run from a file
NORMALIZATION_OPS = frozenset({"LayerNormalization", "GroupNormalization", "InstanceNormalization",
                               "MeanVarianceNormalization"})
NORM_DEVIATION_LIMIT = 256.0  # its square is fp16's largest finite value, 65504, to rounding
STAT_KEYS = ("min_cosine", "max_abs", "mean_abs", "median_abs", "max_rel", "mean_rel", "median_rel")


def parse_goal(islands: Any, accuracy: Any, precision: str) -> tuple[str, Tolerance | None]:
    """The `islands` (static|auto) and `accuracy` (a cosine goal) options as convert() takes them:
    (mode, tolerance or None for the precision's own). One-line errors for bad values."""
    mode = "static" if islands is None else str(islands).strip().lower()
    if mode not in ISLAND_MODES:
        raise InputError(f"-O islands={islands} is not one of {', '.join(ISLAND_MODES)}",
                         fix="use -O islands=auto (search the fewest fp32 nodes) or -O islands=static")
    if mode == "auto" and str(precision) not in ("fp16", "bf16"):
        raise InputError(f"-O islands=auto chooses the fp32 nodes of an fp16 or bf16 graph; this build is "
                         f"{precision}", fix="use --precision fp16 or bf16, or drop -O islands")
    if accuracy is None:
        return mode, None
    try:
        cosine = float(accuracy)
    except (TypeError, ValueError):
        cosine = math.nan
    if not 0 < cosine <= 1:  # NaN too
        raise InputError(f"-O accuracy={accuracy} is not a cosine in (0, 1]",
                         fix="give the worst output cosine against fp32 to meet, e.g. -O accuracy=0.999")
    return mode, tolerance_with(default_tolerance(precision), min_cosine=cosine)


def ensure_node_names(model: onnx.ModelProto) -> int:
    """Give unnamed or duplicate-named top-level nodes unique names (islands are kept by name,
    ATC's keep_dtype lists names); returns how many were named."""
    seen: set[str] = set()
    taken = {n.name for n in model.graph.node if n.name}
    named = 0
    for k, node in enumerate(model.graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.name or node.op_type}_vlc{k}"
        name, extra = base, 0
        while name in taken or name in seen:
            extra += 1
            name = f"{base}_{extra}"
        node.name = name
        seen.add(name)
        taken.add(name)
        named += 1
    return named


@dataclass
class Unit:
    """What the search keeps or releases as one: a node, or a decomposed LayerNorm pattern."""

    nodes: list[str]
    op_types: list[str]
    position: int  # graph order of its first node

    def label(self) -> str:
        return self.nodes[0] if len(self.nodes) == 1 else f"{self.nodes[0]} (+{len(self.nodes) - 1})"


@dataclass
class Trial:
    """One measurement: the outputs with a set of units released."""

    passed: bool
    errors: dict[str, float]  # relative L2 error ||a - r|| / ||r|| per output (inf for NaN/Inf)
    numbers: dict[str, float]  # worst of each STAT_KEYS over the outputs
    fp32_nodes: int
    accuracy: AccuracyReport | None = None
    score: float = math.inf  # what releasing costs: the largest growth of an output's error over static


@dataclass
class IslandSearch:
    """The search's record, for the conversion report (report.islands)."""

    mode: str
    goal: Tolerance
    inputs: str
    static_nodes: int = 0  # nodes the static conversion keeps in fp32 (every reason)
    static_units: int = 0  # of those, the releasable units (numeric islands)
    static_numbers: dict[str, float] = field(default_factory=dict)
    chosen: list[str] = field(default_factory=list)  # unit nodes kept in fp32 after the search
    chosen_nodes: int = 0  # nodes the chosen conversion keeps in fp32 (every reason)
    chosen_by_op: dict[str, int] = field(default_factory=dict)
    chosen_numbers: dict[str, float] = field(default_factory=dict)
    followers: list[str] = field(default_factory=list)  # kept for fp16's range after a kept unit (lowp "range")
    released: list[str] = field(default_factory=list)  # unit nodes moved to low precision
    must_keep: list[str] = field(default_factory=list)  # units that miss the goal when released alone
    guarded: list[dict[str, Any]] = field(default_factory=list)  # normalizations kept for fp16's range
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0
    max_evaluations: int = DEFAULT_MAX_EVALUATIONS
    groups: int = 0
    budget_exhausted: bool = False
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "goal": self.goal.to_json(), "inputs": self.inputs,
            "static": {"fp32_nodes": self.static_nodes, "units": self.static_units,
                       "numbers": _json_numbers(self.static_numbers)},
            "chosen": {"fp32_nodes": self.chosen_nodes, "units_kept": self.chosen,
                       "range_followers": self.followers, "by_op": self.chosen_by_op,
                       "numbers": _json_numbers(self.chosen_numbers)},
            "released": self.released, "must_keep": self.must_keep, "guarded": self.guarded,
            "sensitivity": self.sensitivity,
            "search": {"evaluations": self.evaluations, "seconds": round(self.seconds, 3),
                       "max_evaluations": self.max_evaluations, "groups": self.groups,
                       "budget_exhausted": self.budget_exhausted, "steps": self.steps,
                       "measured": "ONNX Runtime CPU against the fp32 graph: every low-precision "
                                   "tensor rounded where produced (check.emulate_low_precision), and "
                                   "fp16 graphs as they run too; both must meet the goal"},
            "notes": self.notes,
        }

    def summary(self) -> str:
        return (f"islands=auto: {self.chosen_nodes} fp32 nodes (static {self.static_nodes}), "
                f"min cosine {self.chosen_numbers.get('min_cosine', math.nan):.6f}; "
                f"{self.evaluations} runs in {self.seconds:.1f} s")


def _json_numbers(numbers: Mapping[str, float]) -> dict[str, Any]:
    return {k: (v if math.isfinite(v) else str(v)) for k, v in numbers.items()}


def _units(stats: LowPrecisionStats, order: Mapping[str, int], op_of: Mapping[str, str]) -> list[Unit]:
    """The static conversion's releasable islands: each LayerNorm pattern whole (overlapping
    patterns merged), then each node kept for its op type that is not type-fixed."""
    groups: list[set[str]] = []
    for island in stats.island_nodes:
        members = {n for n in island if n in stats.fp32_nodes}
        for g in [g for g in groups if g & members]:
            members |= g
            groups.remove(g)
        if members:
            groups.append(members)
    in_island = set().union(*groups) if groups else set()
    for name, reason in stats.fp32_nodes.items():
        if reason == "op" and name not in in_island and op_of.get(name) not in TYPE_FIXED_OPS:
            groups.append({name})
    units = []
    for g in groups:
        names = sorted(g, key=order.__getitem__)
        units.append(Unit(names, [op_of[n] for n in names], order[names[0]]))
    return sorted(units, key=lambda u: u.position)


def _errors(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The relative L2 error of each output (inf when missing, misshapen, NaN or Inf)."""
    errors = {}
    for name, ref in reference.items():
        r = np.asarray(ref, np.float64).ravel()
        a = np.asarray(actual[name], np.float64).ravel() if name in actual else None
        if a is None or a.shape != r.shape or not np.isfinite(a).all():
            errors[name] = math.inf
            continue
        norm, err = float(np.linalg.norm(r)), float(np.linalg.norm(a - r))
        errors[name] = err / norm if norm > 0 else err
    return errors


def _score(errors: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    """How much worse than `baseline` (the static islands) the worst-hit output got; per output,
    so that an output the unit does not feed cannot hide its effect on one it does."""
    growth = [errors[k] - baseline.get(k, 0.0) for k in errors]
    return max(growth, default=0.0) if all(math.isfinite(g) for g in growth) else math.inf


def worst_numbers(report: AccuracyReport) -> dict[str, float]:
    """The worst of each of STAT_KEYS over a report's outputs (lowest cosine, largest errors)."""
    outs = report.outputs
    if not outs:
        return {}
    worst = {"min_cosine": min((o.cosine for o in outs), key=lambda c: c if math.isfinite(c) else -math.inf)}
    for key in STAT_KEYS[1:]:
        values = [getattr(o, key) for o in outs]
        worst[key] = max(values, key=lambda v: v if math.isfinite(v) else math.inf)
    return worst


class _Evaluator:
    """Converts with a set of units released, runs the emulated graph, compares; counts runs."""

    def __init__(self, model: onnx.ModelProto, low: int, keep_ops: frozenset[str], units: list[Unit],
                 feeds: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], goal: Tolerance,
                 run: Callable[[Any, Mapping[str, np.ndarray]], dict[str, np.ndarray]],
                 always_keep: list[str] | None = None) -> None:
        self.model, self.low, self.units = model, low, units
        self.always_keep = list(always_keep or [])
        self.reuse = ConversionCache()
        self.fixed_ops = frozenset(keep_ops) & TYPE_FIXED_OPS
        self.feeds, self.reference, self.goal, self.run = feeds, reference, goal, run
        self.count = 0
        self.cache: dict[frozenset[int], Trial] = {}
        self.baseline: dict[str, float] = {}  # the static islands' errors, once measured

    def kept_names(self, released: frozenset[int]) -> list[str]:
        return self.always_keep + [n for k, u in enumerate(self.units) if k not in released for n in u.nodes]

    def convert(self, released: frozenset[int]) -> tuple[onnx.ModelProto, LowPrecisionStats]:
        return to_low_precision(self.model, self.low, self.fixed_ops, keep_nodes=self.kept_names(released),
                                layernorm_islands=False, reuse=self.reuse)

    def __call__(self, released: frozenset[int]) -> Trial:
        if released in self.cache:
            return self.cache[released]

        converted, stats = self.convert(released)
        self.count += 1
        # as the conversion check: fp16 as ONNX Runtime runs it and emulated, bf16 emulated only
        # the graph as it is first (fp16), then emulated in place: one copy of a large graph fewer
        graphs: list[Callable[[], onnx.ModelProto]] = [lambda: converted] if self.low == TensorProto.FLOAT16 else []
        graphs.append(lambda: emulate_low_precision(converted, self.low, stats.low_tensors, in_place=True))
        passed, errors, reports = True, {k: 0.0 for k in self.reference}, []
        for graph in graphs:
            try:
                actual = self.run(graph(), self.feeds)
            except Exception:  # noqa: BLE001 - a graph ONNX Runtime rejects misses the goal
                passed, errors = False, {k: math.inf for k in self.reference}
                break
            report = compare_outputs(actual, self.reference, self.goal)
            reports.append(report)
            passed = passed and report.passed
            errors = {k: max(v, _errors(actual, self.reference)[k]) for k, v in errors.items()}
        worst = AccuracyReport(self.goal, [o for r in reports for o in r.outputs])
        trial = Trial(passed, errors, worst_numbers(worst), sum(stats.fp32_ops.values()), worst)
        if not released:
            self.baseline = trial.errors
        trial.score = _score(trial.errors, self.baseline)
        self.cache[released] = trial
        return trial


def _normalization_deviations(model: onnx.ModelProto, names: list[str], feeds: Mapping[str, np.ndarray],
                              run: Callable[[Any, Mapping[str, np.ndarray]], dict[str, np.ndarray]],
                              ) -> dict[str, float]:
    """For each named normalization node: the largest |x - mean(x)| of its input on `feeds` (fp32),
    the mean over the axes it normalizes (LayerNormalization: `axis` on; others: every axis past
    the batch, which only overstates a group's deviation)."""
    if not names:
        return {}
    nodes = {n.name: n for n in model.graph.node if n.name in set(names)}
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    exposed = {n.input[0] for n in nodes.values()} - {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in sorted(exposed))
    values = run(probe, feeds)
    deviations = {}
    for name, node in nodes.items():
        x = np.asarray(values[node.input[0]], np.float64)
        if node.op_type == "LayerNormalization":
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            axes = tuple(range(axis % x.ndim, x.ndim))
        else:
            axes = tuple(range(1, x.ndim))
        deviation = np.abs(x - x.mean(axis=axes, keepdims=True)) if x.size else np.zeros(1)
        deviations[name] = float(deviation.max()) if np.isfinite(deviation).all() else math.inf
    return deviations


def run_in_memory_or_file(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """check.run_onnx, through a temporary file for graphs past protobuf's 2 GiB."""
    if model.ByteSize() < LARGE_MODEL_BYTES:
        return run_onnx(model, feeds)
    with tempfile.TemporaryDirectory(prefix="vlc-islands-") as tmp:
        path = Path(tmp) / "trial.onnx"
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="trial.onnx.data")
        return run_onnx(path, feeds)


def search_islands(model: onnx.ModelProto, low: int, feeds: Mapping[str, np.ndarray],
                   reference: Mapping[str, np.ndarray], goal: Tolerance, *,
                   keep_ops: frozenset[str] = KEEP_FP32_OPS, inputs: str = "given feeds",
                   max_evaluations: int = DEFAULT_MAX_EVALUATIONS, max_groups: int = DEFAULT_MAX_GROUPS,
                   run: Callable[[Any, Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
                   ) -> IslandSearch:
    """The fewest static-island nodes of `model` (uniquely named: ensure_node_names) to keep in
    fp32 so that the `low` graph meets `goal` on `feeds` against the fp32 `reference` outputs."""
    if low not in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
        raise ValueError(f"low-precision type must be FLOAT16 or BFLOAT16, got {low}")
    start = time.perf_counter()
    record = IslandSearch("auto", goal, inputs, max_evaluations=max_evaluations)
    order = {n.name: k for k, n in enumerate(model.graph.node)}
    op_of = {n.name: n.op_type for n in model.graph.node}
    _, static_stats = to_low_precision(model, low, keep_ops)
    units = _units(static_stats, order, op_of)
    run = run or run_in_memory_or_file
    guarded: list[str] = []
    if low == TensorProto.FLOAT16:
        deviations = _normalization_deviations(model, [u.nodes[0] for u in units
                                                       if len(u.nodes) == 1 and u.op_types[0] in NORMALIZATION_OPS],
                                               feeds, run)
        record.guarded = [{"node": n, "max_deviation": d} for n, d in deviations.items()
                          if not d <= NORM_DEVIATION_LIMIT]
        guarded = [g["node"] for g in record.guarded]
        units = [u for u in units if u.nodes[0] not in guarded]
        if guarded:
            record.steps.append(f"{len(guarded)} normalizations kept: their input strays more than "
                                f"{NORM_DEVIATION_LIMIT:g} from its mean (fp16 squares it past 65504)")
    evaluate = _Evaluator(model, low, keep_ops, units, feeds, reference, goal, run, guarded)
    record.static_units = len(units)
    every = frozenset(range(len(units)))

    def finish(released: frozenset[int]) -> IslandSearch:
        trial = evaluate(released)
        _, stats = evaluate.convert(released)
        record.chosen = evaluate.kept_names(released)
        record.released = [n for k in sorted(released) for n in units[k].nodes]
        record.chosen_nodes = sum(stats.fp32_ops.values())
        record.chosen_by_op = dict(sorted(stats.fp32_ops.items()))
        record.followers = [n for n, why in stats.fp32_nodes.items() if why == "range"]
        record.chosen_numbers = trial.numbers
        record.evaluations = evaluate.count
        record.seconds = time.perf_counter() - start
        return record

    static = evaluate(frozenset())
    record.static_nodes = static.fp32_nodes
    record.static_numbers = static.numbers
    record.steps.append(f"static islands: {len(units)} units, {static.fp32_nodes} fp32 nodes, "
                        f"{'meets' if static.passed else 'misses'} the goal")
    if not static.passed:
        record.notes.append("the static islands miss the goal already: nothing is released (keep more "
                            "operators in fp32 with -O islands=static and a target's fp32 options, or "
                            "use another precision)")
        return finish(frozenset())
    if not units:
        return finish(frozenset())
    everything = evaluate(every)
    record.steps.append(f"all {len(units)} units released: {'meets' if everything.passed else 'misses'} the goal")
    if everything.passed:
        return finish(every)

    # 3. sensitivity of each group of units (a group is one unit unless there are many)
    size = max(1, math.ceil(len(units) / max(1, max_groups)))
    groups = [list(range(k, min(k + size, len(units)))) for k in range(0, len(units), size)]
    record.groups = len(groups)
    budget_left = lambda: evaluate.count < max_evaluations  # noqa: E731
    scores: dict[int, Trial] = {}
    for g, members in enumerate(groups):
        if not budget_left():
            record.budget_exhausted = True
            break
        scores[g] = evaluate(frozenset(members))
    must_keep = {g for g, t in scores.items() if not t.passed}
    ranked = sorted((g for g in scores if g not in must_keep), key=lambda g: (scores[g].score, g))
    for g in sorted(scores, key=lambda g: (scores[g].score, g)):
        t = scores[g]
        record.sensitivity.append({"nodes": [n for k in groups[g] for n in units[k].nodes],
                                   "op_types": [o for k in groups[g] for o in units[k].op_types],
                                   "error_growth": t.score if math.isfinite(t.score) else "inf",
                                   "min_cosine": t.numbers.get("min_cosine", math.nan) if t.numbers else "nan",
                                   "passed": t.passed})
    record.must_keep = [n for g in sorted(must_keep) for k in groups[g] for n in units[k].nodes]
    record.steps.append(f"sensitivity of {len(scores)} groups of up to {size} units: "
                        f"{len(must_keep)} miss the goal alone")

    def released_by(chosen: list[int]) -> frozenset[int]:
        return frozenset(k for g in chosen for k in groups[g])

    # 4. the longest prefix of the least sensitive groups that meets the goal
    lo, hi = 0, len(ranked)  # prefix lo is known to pass (0: the static islands)
    if ranked and budget_left() and evaluate(released_by(ranked)).passed:
        lo = hi
    else:
        hi -= 1  # the whole list is known (or assumed, out of budget) to miss
        while lo < hi and budget_left():
            mid = (lo + hi + 1) // 2
            if evaluate(released_by(ranked[:mid])).passed:
                lo = mid
            else:
                hi = mid - 1
    chosen = list(ranked[:lo])
    record.steps.append(f"bisection: the {lo} least sensitive of {len(ranked)} groups released together")

    # 5. greedy: each group still kept, least sensitive first; then single units of kept groups
    for g in ranked[lo:]:
        if not budget_left():
            record.budget_exhausted = True
            break
        if evaluate(released_by(chosen + [g])).passed:
            chosen.append(g)
    released = released_by(chosen)
    if size > 1:
        for g in [g for g in range(len(groups)) if g not in chosen]:
            for k in groups[g]:
                if not budget_left():
                    record.budget_exhausted = True
                    break
                if evaluate(released | {k}).passed:
                    released = released | {k}
    record.steps.append(f"greedy: {len(units) - len(released)} of {len(units)} units kept in fp32")
    if record.budget_exhausted:
        record.notes.append(f"the search stopped at its budget of {max_evaluations} runs; units it did "
                            "not try stay in fp32")
    if not evaluate(released).passed:  # never: every accepted step passed, and trials are cached
        released = frozenset()
    return finish(released)

