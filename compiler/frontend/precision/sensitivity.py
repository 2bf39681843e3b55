"""int8 sensitivity per node: how far the model's outputs move when only that node is quantized.

The scales come from one calibrated Q/DQ graph (vlc's int8 pass); each node's Q/DQ (on its inputs
and its outputs, as the int8 graph has them) is copied, alone, into the fp32 graph, which then
runs in ONNX Runtime on the CPU (Q/DQ by their definition, as the conversion check runs them)
against the plain fp32 graph. `plan_int8` keeps the nodes that buy the most MACs per unit of
accuracy in int8 and gives up the rest until the outputs meet a cosine gate; the onnxruntime
target's `-O int8=auto` builds with its plan (vlc.frontend.precision.int8).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlc import flops as fl
from vlc.accuracy import compare_outputs, default_tolerance
from vlc.errors import InputError
from vlc.frontend.precision.check import check_options

QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class NodeSensitivity:
    node: str
    op_type: str
    cosine: float  # worst output cosine with only this node in int8
    rel_error: float  # worst output ||q - r|| / ||r||
    flops: float | None  # FLOPs of the node at the feeds' batch, when shapes tell

    @property
    def sensitivity(self) -> float:
        return 1.0 - self.cosine if math.isfinite(self.cosine) else math.inf

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "sensitivity": self.sensitivity}


@dataclass
class _NodeQuant:
    """How the int8 graph quantizes one node: Q/DQ chains on its inputs ([Q, DQ] for an
    activation, [DQ] for a weight) and Q/DQ pairs on its outputs, each by position."""

    inputs: list[tuple[int, list[Any]]]
    outputs: list[tuple[int, Any, Any]]


def _quantized_nodes(qdq: Any, op_types: Sequence[str]) -> dict[str, _NodeQuant]:
    """Each node of `op_types` (by name) that reads a DequantizeLinear, with its Q/DQ."""
    producer = {o: n for n in qdq.graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for n in qdq.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    found: dict[str, _NodeQuant] = {}
    for node in qdq.graph.node:
        if node.op_type not in op_types or not node.name:
            continue
        chains = []
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            chains.append((i, [q, dq] if q is not None and q.op_type == "QuantizeLinear" else [dq]))
        if not chains:
            continue
        pairs = []
        for j, out in enumerate(node.output):
            for q in readers.get(out, []):
                dq = next((d for d in readers.get(q.output[0], []) if d.op_type == "DequantizeLinear"), None)
                if q.op_type == "QuantizeLinear" and q.input[0] == out and dq is not None:
                    pairs.append((j, q, dq))
                    break
        found[node.name] = _NodeQuant(chains, pairs)
    return found


def _worst(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> tuple[float, float]:
    report = compare_outputs(actual, reference, default_tolerance("int8"))
    cosine = min((o.cosine for o in report.outputs), default=float("nan"))
    rel = 0.0
    for name, ref in reference.items():
        r = np.asarray(ref, np.float64)
        diff = np.linalg.norm(np.asarray(actual[name], np.float64) - r)
        rel = max(rel, float(diff / np.linalg.norm(r)) if np.linalg.norm(r) else float(diff != 0) * math.inf)
    return cosine, rel


def _run_all(model: Any, feed_sets: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """A graph as the int8 conversion check runs it, on each of `feed_sets` with one session: Q/DQ
    by their definition (no fused CPU int8 kernels, whose saturation on CPUs without VNNI would
    make the ranking machine-dependent)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), check_options(model),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = []
    for feeds in feed_sets:
        inputs = {i.name: np.asarray(feeds[i.name]) for i in session.get_inputs()}
        results.append(dict(zip(names, session.run(names, inputs))))
    return results


class _Variant:
    """The fp32 graph with the chosen nodes quantized as the int8 graph quantizes them (their input
    chains and output pairs spliced in), undone on exit: the weights are not copied per variant."""

    def __init__(self, model: Any, qdq: Any, chosen: Mapping[str, _NodeQuant]):
        self.model, self.qdq, self.chosen = model, qdq, chosen

    def __enter__(self) -> Any:
        g = self.model.graph
        self.nodes = list(g.node)
        self.init_count = len(g.initializer)
        self.opsets = [(o.domain, o.version) for o in self.model.opset_import]
        have = {i.name for i in g.initializer}
        inits = {i.name: i for i in self.qdq.graph.initializer}

        def take(node: Any) -> Any:
            for name in node.input:
                if name in inits and name not in have:
                    g.initializer.append(inits[name])
                    have.add(name)
            return node

        spliced = []
        for node in self.nodes:
            quant = self.chosen.get(node.name)
            if quant is None:
                spliced.append(node)
                continue
            target = type(node)()
            target.CopyFrom(node)
            for index, chain in quant.inputs:
                spliced.extend(take(n) for n in chain)
                target.input[index] = chain[-1].output[0]
            after = []
            for j, q, dq in quant.outputs:  # X -> X__preq, then Q -> DQ writes X: every reader sees int8
                out = target.output[j]
                target.output[j] = f"{out}__preq"
                after += [_retarget(take(q), f"{out}__preq", f"{out}__q"), _retarget(take(dq), f"{out}__q", out)]
            spliced += [target, *after]
        del g.node[:]
        g.node.extend(_unique_outputs(spliced))
        qdq_default = next((o.version for o in self.qdq.opset_import if o.domain in ("", "ai.onnx")), None)
        for o in self.model.opset_import:
            if o.domain in ("", "ai.onnx") and qdq_default:
                o.version = max(o.version, qdq_default)
        return self.model

    def __exit__(self, *exc: Any) -> None:
        g = self.model.graph
        del g.node[:]
        g.node.extend(self.nodes)
        del g.initializer[self.init_count:]
        del self.model.opset_import[:]
        for domain, version in self.opsets:
            self.model.opset_import.add(domain=domain, version=version)


def _retarget(node: Any, source: str, output: str) -> Any:
    """A copy of a Q or DQ node reading `source` and writing `output`."""
    copy = type(node)()
    copy.CopyFrom(node)
    copy.input[0], copy.output[0], copy.name = source, output, f"{output}__{node.op_type}"
    return copy


def _unique_outputs(nodes: list[Any]) -> list[Any]:
    """Drop repeated Q/DQ nodes (the same pair read by two spliced nodes): a tensor has one producer."""
    seen: set[str] = set()
    kept = []
    for n in nodes:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] in seen:
            continue
        seen.update(n.output)
        kept.append(n)
    return kept


def _node_flops(model: Any, batch: int) -> dict[str, float]:
    """FLOPs of each named node at `batch` (as vlc.flops counts them), where shapes tell."""
    try:
        import onnx

        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        fl._strip_weights(copy)
        del copy.graph.value_info[:]
        fl._fix_batch(copy, batch)
        shapes = fl._shapes(fl._infer(copy))
    except Exception:  # noqa: BLE001 - FLOPs are a nicety beside the sensitivity
        return {}
    counted = {}
    for node in model.graph.node:
        value = fl.node_flops(node, shapes)
        if value is not None and node.name:
            counted[node.name] = value
    return counted


def int8_sensitivity(fp32_path: str | Path, qdq_path: str | Path, feeds: Mapping[str, np.ndarray], *,
                     op_types: Sequence[str] = QUANTIZED_OPS) -> list[NodeSensitivity]:
    """Each quantized node of `qdq_path` (vlc's int8 graph of `fp32_path`), alone in int8 in the
    fp32 graph: its outputs' cosine and relative error against fp32 on `feeds`. Most sensitive
    first."""
    return _Splicer(fp32_path, qdq_path, feeds, op_types).sensitivities()


class _Splicer:
    """The fp32 graph, the int8 graph's Q/DQ per node, and the fp32 reference on the feeds."""

    def __init__(self, fp32: str | Path | Any, qdq: str | Path | Any,
                 feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]], op_types: Sequence[str]):
        import onnx

        self.model = fp32 if isinstance(fp32, onnx.ModelProto) else onnx.load(str(fp32))
        self.qdq = qdq if isinstance(qdq, onnx.ModelProto) else onnx.load(str(qdq))
        self.chains = _quantized_nodes(self.qdq, op_types)
        where = "the int8 graph" if isinstance(qdq, onnx.ModelProto) else str(qdq)
        if not self.chains:
            raise InputError(f"{where} has no {'/'.join(op_types)} node reading a DequantizeLinear",
                             fix="pass the int8 (Q/DQ) graph vlc built from the fp32 graph")
        names = {n.name for n in self.model.graph.node}
        if missing := sorted(set(self.chains) - names):
            raise InputError(f"quantized node(s) {', '.join(missing[:3])} of {where} are not in the fp32 graph",
                             fix="pass the fp32 graph the int8 graph was quantized from")
        # one feed, or several (the check's inputs and calibration samples): judged by the worst
        self.feed_sets = [feeds] if isinstance(feeds, Mapping) else list(feeds)
        self.references = _run_all(self.model, self.feed_sets)
        first = self.feed_sets[0]
        batch = next((int(v.shape[0]) for v in first.values() if np.ndim(v)), 1)
        self.flops = _node_flops(self.model, batch)
        self.op_of = {n.name: n.op_type for n in self.model.graph.node}
        self.runs = 0

    def measure(self, int8_nodes: Sequence[str]) -> tuple[float, float]:
        """Worst output cosine and relative error with exactly `int8_nodes` quantized."""
        self.runs += 1
        with _Variant(self.model, self.qdq, {n: self.chains[n] for n in int8_nodes}) as variant:
            worst = [_worst(a, r) for a, r in zip(_run_all(variant, self.feed_sets), self.references)]
        return min(c for c, _ in worst), max(r for _, r in worst)

    def sensitivities(self) -> list[NodeSensitivity]:
        results = []
        for name in self.chains:
            cosine, rel = self.measure([name])
            results.append(NodeSensitivity(name, self.op_of[name], cosine, rel, self.flops.get(name)))
        return sorted(results, key=lambda s: (-s.sensitivity, s.node))


@dataclass
class Int8Plan:
    """Which quantized nodes stay in int8 so that the outputs keep `min_cosine` against fp32."""

    int8_nodes: list[str]
    excluded: list[str]  # kept in float, in the order the plan gave them up
    cosine: float  # worst output cosine with exactly `int8_nodes` in int8
    min_cosine: float
    int8_mac_share: float | None  # share of the quantizable nodes' MACs left in int8
    runs: int  # ONNX Runtime runs of spliced graphs, the per-node ones included
    all_int8_cosine: float  # every node in int8, as the int8 graph is
    order: str = "sensitivity per MAC"  # how excluded nodes were chosen
    sensitivities: list[dict[str, Any]] | None = None  # per node, most sensitive first

    @property
    def int8_flops_share(self) -> float | None:  # FLOPs are 2 x MACs: the same share
        return self.int8_mac_share

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_MAX_RUNS = 400


def plan_int8(fp32_path: str | Path | Any, qdq_path: str | Path | Any,
              feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]], *,
              min_cosine: float = 0.98, op_types: Sequence[str] = QUANTIZED_OPS,
              max_runs: int = DEFAULT_MAX_RUNS) -> Int8Plan:
    """Keep as many MACs in int8 as the cosine gate allows.

    1. every node in int8 (the int8 graph as it is): if that meets `min_cosine`, nothing is
       excluded;
    2. each node alone in int8 (`int8_sensitivity`): its cost, 1 - cosine;
    3. the nodes ranked by cost per MAC (a knapsack's greedy order: the most accuracy bought back
       per MAC given up), and the shortest prefix of that ranking whose exclusion meets the gate
       found by bisection on its length (more nodes in float do not make the outputs worse);
    4. the excluded nodes, largest first, each tried back in int8 once (kept when the gate still
       holds), while `max_runs` lasts.
    `feeds` is one feed or several; a measurement's cosine is the worst over all of them.
    Returns the plan (runs counted, the per-node numbers in `sensitivities`)."""
    splicer = _Splicer(fp32_path, qdq_path, feeds, op_types)
    everything = list(splicer.chains)
    flops = splicer.flops
    counted = sum(flops.get(n) or 0 for n in everything)

    def share(nodes: Sequence[str]) -> float | None:
        return sum(flops.get(n) or 0 for n in nodes) / counted if counted else None

    all_cosine = splicer.measure(everything)[0]
    if all_cosine >= min_cosine:
        return Int8Plan(everything, [], all_cosine, min_cosine, share(everything), splicer.runs, all_cosine)
    ranked = splicer.sensitivities()
    # cost per MAC; a node whose FLOPs are unknown counts as the cheapest known one
    smallest = min((f for f in flops.values() if f), default=1.0)
    order = sorted(ranked, key=lambda s: (-s.sensitivity / (s.flops or smallest), s.node))
    names = [s.node for s in order]
    cosines: dict[int, float] = {0: all_cosine, len(names): 1.0}

    def cosine_without(k: int) -> float:  # the first k of the order in float
        if k not in cosines:
            cosines[k] = splicer.measure(names[k:])[0]
        return cosines[k]

    lo, hi = 0, len(names)  # lo fails, hi passes: find the smallest k that passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cosine_without(mid) >= min_cosine:
            hi = mid
        else:
            lo = mid
    excluded = names[:hi]
    cosine = cosine_without(hi)
    for name in sorted(excluded, key=lambda n: -(flops.get(n) or 0)):
        if splicer.runs >= max_runs:
            break
        trial = [n for n in everything if n not in excluded or n == name]
        c = splicer.measure(trial)[0]
        if c >= min_cosine:
            excluded = [n for n in excluded if n != name]
            cosine = c
    int8 = [n for n in everything if n not in excluded]
    return Int8Plan(int8, excluded, cosine, min_cosine, share(int8), splicer.runs, all_cosine,
                    sensitivities=[s.to_json() for s in ranked])
