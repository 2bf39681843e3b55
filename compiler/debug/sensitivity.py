"""int8 sensitivity per node: how far the model's outputs move when only that node is quantized.

The scales come from one calibrated Q/DQ graph (vlc's int8 pass); each node's Q/DQ (on its inputs
and its outputs, as the int8 graph has them) is copied, alone, into the fp32 graph, which then runs in ONNX Runtime on the CPU against the plain
fp32 graph. Nodes whose quantization costs the most accuracy are the ones to keep in float; the
cheapest ones (in error per FLOP) go to int8 first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from vlc.accuracy import compare_outputs, default_tolerance
from vlc.errors import InputError

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
    from vlc import flops as fl

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
    import onnx
    from vlc.measure import onnx_cpu_outputs

    model, qdq = onnx.load(str(fp32_path)), onnx.load(str(qdq_path))
    chains = _quantized_nodes(qdq, op_types)
    names = {n.name for n in model.graph.node}
    if not chains:
        raise InputError(f"{qdq_path} has no {'/'.join(op_types)} node reading a DequantizeLinear",
                         fix="pass the int8 (Q/DQ) graph vlc built from the fp32 graph")
    if missing := sorted(set(chains) - names):
        raise InputError(f"quantized node(s) {', '.join(missing[:3])} of {qdq_path} are not in {fp32_path}",
                         fix="pass the fp32 graph the int8 graph was quantized from")
    reference = onnx_cpu_outputs(model, feeds)
    batch = next((int(v.shape[0]) for v in feeds.values() if np.ndim(v)), 1)
    flops = _node_flops(model, batch)
    op_of = {n.name: n.op_type for n in model.graph.node}
    results = []
    for name, quant in chains.items():
        with _Variant(model, qdq, {name: quant}) as variant:
            cosine, rel = _worst(onnx_cpu_outputs(variant, feeds), reference)
        results.append(NodeSensitivity(name, op_of[name], cosine, rel, flops.get(name)))
    return sorted(results, key=lambda s: (-s.sensitivity, s.node))


@dataclass
class Int8Plan:
    """Which quantized nodes stay in int8 so that the outputs keep `min_cosine` against fp32."""

    int8_nodes: list[str]
    excluded: list[str]  # kept in float, most sensitive first
    cosine: float  # worst output cosine with exactly `int8_nodes` in int8
    min_cosine: float
    int8_flops_share: float | None  # share of the quantizable nodes' FLOPs left in int8
    runs: int  # ONNX Runtime runs of spliced graphs, the per-node ones included

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_int8(fp32_path: str | Path, qdq_path: str | Path, feeds: Mapping[str, np.ndarray], *,
              min_cosine: float = 0.98, op_types: Sequence[str] = QUANTIZED_OPS) -> Int8Plan:
    """Quantize the least sensitive nodes first and keep as many in int8 as the gate allows.

    The nodes are ranked by `int8_sensitivity`; the longest prefix of the least sensitive ones whose
    joint int8 outputs keep `min_cosine` is found by bisection on its length (more nodes in int8 do
    not make the outputs better), so O(log n) runs beside the n per-node ones."""
    import onnx
    from vlc.measure import onnx_cpu_outputs

    ranked = int8_sensitivity(fp32_path, qdq_path, feeds, op_types=op_types)
    order = [s.node for s in reversed(ranked)]  # least sensitive first
    model, qdq = onnx.load(str(fp32_path)), onnx.load(str(qdq_path))
    chains = _quantized_nodes(qdq, op_types)
    reference = onnx_cpu_outputs(model, feeds)
    runs = len(ranked)
    cosines: dict[int, float] = {0: 1.0}

    def cosine_with(k: int) -> float:
        nonlocal runs
        if k not in cosines:
            with _Variant(model, qdq, {n: chains[n] for n in order[:k]}) as variant:
                cosines[k] = _worst(onnx_cpu_outputs(variant, feeds), reference)[0]
            runs += 1
        return cosines[k]

    lo, hi = 0, len(order)  # lo passes; find the largest k that passes
    if cosine_with(hi) >= min_cosine:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cosine_with(mid) >= min_cosine:
            lo = mid
        else:
            hi = mid
    flops = {s.node: s.flops for s in ranked}
    counted = [f for f in flops.values() if f]
    share = (sum(flops[n] or 0 for n in order[:lo]) / sum(counted)) if counted else None
    return Int8Plan(order[:lo], list(reversed(order[lo:])), cosine_with(lo), min_cosine, share, runs)
