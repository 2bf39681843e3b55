"""int8 sensitivity per node: how far the model's outputs move when only that node is quantized.

The scales come from one calibrated Q/DQ graph (vlc's int8 pass); each node's Q/DQ inputs are
copied, alone, into the fp32 graph, which then runs in ONNX Runtime on the CPU against the plain
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


def _quantized_inputs(qdq: Any, op_types: Sequence[str]) -> dict[str, list[tuple[int, list[Any]]]]:
    """For each quantized node (by name): (input index, [Q?, DQ]) of every input read through a
    DequantizeLinear, with the QuantizeLinear before it for activations."""
    producer = {o: n for n in qdq.graph.node for o in n.output}
    found: dict[str, list[tuple[int, list[Any]]]] = {}
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
        if chains:
            found[node.name] = chains
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
    """The fp32 graph with one node's Q/DQ inputs spliced in, undone on exit (the weights are not
    copied per node)."""

    def __init__(self, model: Any, qdq: Any, node_name: str, chains: list[tuple[int, list[Any]]]):
        self.model, self.qdq, self.node_name, self.chains = model, qdq, node_name, chains

    def __enter__(self) -> Any:
        g = self.model.graph
        self.nodes = list(g.node)
        self.init_count = len(g.initializer)
        self.opsets = [(o.domain, o.version) for o in self.model.opset_import]
        at = next(i for i, n in enumerate(self.nodes) if n.name == self.node_name)
        target = type(self.nodes[at])()
        target.CopyFrom(self.nodes[at])
        have = {i.name for i in g.initializer}
        inits = {i.name: i for i in self.qdq.graph.initializer}
        inserted = []
        for index, chain in self.chains:
            for n in chain:
                inserted.append(n)
                for name in n.input:
                    if name in inits and name not in have:
                        g.initializer.append(inits[name])
                        have.add(name)
            target.input[index] = chain[-1].output[0]
        del g.node[:]
        g.node.extend(self.nodes[:at] + inserted + [target] + self.nodes[at + 1:])
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
    chains = _quantized_inputs(qdq, op_types)
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
    for name, node_chains in chains.items():
        with _Variant(model, qdq, name, node_chains) as variant:
            cosine, rel = _worst(onnx_cpu_outputs(variant, feeds), reference)
        results.append(NodeSensitivity(name, op_of[name], cosine, rel, flops.get(name)))
    return sorted(results, key=lambda s: (-s.sensitivity, s.node))
