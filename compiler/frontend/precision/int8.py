"""The int8 build: calibrated Q/DQ graph, and with `mode="auto"` accuracy-driven exclusions.

    result = build_int8(src, dst, calibration.bind(signature), method="mse", min_cosine=0.98,
                        settings=Int8Settings(mode="auto", activations="uint8"), check_feeds=feeds)
    result.to_json()  # the report's `int8`: mode, MAC share, excluded nodes, plan, table

1. Ranges. `method="mse"` observes every tensor the quantizer will quantize on every calibration
   feed and picks each range by least squared quantization error (calibration.calibrate_ranges);
   minmax / entropy / percentile leave it to ONNX Runtime's calibrator. Either way the table in
   the result is read back from the final graph (scale, zero point, the range they represent).
2. Every Conv/ConvTranspose/Gemm/MatMul quantized (ONNX Runtime's quantize_static, QDQ).
3. `mode="auto"`: when that graph misses `min_cosine` on the check inputs (or on a few
   calibration samples, measured beside them so that two check images do not decide alone),
   vlc.debug.plan_int8 ranks the nodes by accuracy lost per MAC and keeps the most MACs in int8
   that meet it; the graph is then quantized again with the excluded nodes left in float (same
   ranges), so the artifact is ONNX Runtime's own output, not a spliced graph. A plan that
   leaves less than `min_share` of the MACs in int8 is not applied (the graph stays all-int8
   and fails its check): such a build is not an int8 build any more.
The MAC share counts Conv/ConvTranspose/Gemm/MatMul nodes whose data inputs are all dequantized
(their multiply-accumulates run on int8 values) against all of them, at the plan feeds' batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlc.errors import InputError
from vlc.frontend.precision.calibration import CalibrationData, RangeTable, calibrate_ranges
from vlc.frontend.precision.quantize import (
    DEFAULT_QUANT_OPS,
    activation_tensors,
    calibration_table,
    quantize_int8,
    quantized_nodes,
)
from vlc.frontend.precision.sensitivity import DEFAULT_MAX_RUNS, _node_flops, plan_int8

if TYPE_CHECKING:  # onnx is imported where it is used: `vlc targets` lists options without it
    import onnx

INT8_MODES = ("all", "auto")
DEFAULT_MIN_SHARE = 0.5  # auto: below this share of MACs in int8 the plan is not applied
DEFAULT_PLAN_SAMPLES = 6  # calibration samples the auto plan is measured on, beside the check's


@dataclass(frozen=True)
class Int8Settings:
    """How the int8 graph is built (convert's `int8=`); the defaults are TensorRT's Q/DQ form."""

    mode: str = "all"  # all: every Conv/MatMul/Gemm; auto: keep in float what the gate needs
    activations: str = "int8"  # int8: symmetric; uint8: asymmetric (ONNX Runtime's CPU kernels)
    reduce_range: bool = False  # 7-bit weights (no u8 x s8 saturation on AVX2 without VNNI)
    min_share: float = DEFAULT_MIN_SHARE  # auto: the least MAC share a plan may leave in int8
    plan_samples: int = DEFAULT_PLAN_SAMPLES  # auto: calibration samples measured beside the check's
    max_runs: int | None = None  # auto: ONNX Runtime runs the plan may take
    # auto: the plan aims this share of the tolerance (1 - min_cosine) inside the gate, so that
    # inputs it never saw pass too (MobileViT-S planned at exactly 0.98 measured 0.9775 on a
    # held-out image); the plan's `min_cosine` in the manifest is that aim
    plan_margin: float = 0.25

    def __post_init__(self) -> None:
        parse_mode(self.mode)
        if not 0 <= self.min_share <= 1:
            raise InputError(f"-O int8_min_share={self.min_share} is not a share in [0, 1]",
                             fix="give the least share of Conv/MatMul/Gemm MACs to keep in int8, e.g. 0.5")


@dataclass
class Int8Result:
    """What the int8 build did, for the conversion report (`to_json()` is its `int8` entry)."""

    mode: str
    counts: dict[str, int]
    activations: str
    reduce_range: bool
    mac_share: float | None  # Conv/MatMul/Gemm MACs in int8, of all of them
    int8_macs: float | None
    total_macs: float | None
    excluded: list[str] = field(default_factory=list)  # kept in float
    plan: dict[str, Any] | None = None  # vlc.debug.Int8Plan.to_json(), when auto searched
    table: dict[str, Any] = field(default_factory=dict)  # tensor -> scale, zero point, ranges
    min_share: float | None = None
    plan_feeds: str | None = None  # what the auto plan was measured on
    note: str | None = None  # why a plan was not applied

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "activations": self.activations, "reduce_range": self.reduce_range,
                "weights": "int8, per-channel symmetric" + (" (7-bit range)" if self.reduce_range else ""),
                "mac_share": self.mac_share, "int8_macs": self.int8_macs, "total_macs": self.total_macs,
                "min_share": self.min_share, "quantized_nodes": self.counts.get("quantized_nodes"),
                "candidates": self.counts.get("candidates"), "excluded": list(self.excluded),
                "plan": self.plan, "plan_feeds": self.plan_feeds, "note": self.note,
                "calibration_table": self.table}

    def summary(self) -> str:
        return int8_summary(self.to_json())


def int8_summary(data: Mapping[str, Any]) -> str:
    """One line from a report's `int8` entry: the MAC share in int8 and what stayed in float."""
    share = data.get("mac_share")
    if share is None:
        return f"int8 {data.get('mode')}: MAC share unknown (shapes not inferred)"
    excluded = data.get("excluded") or []
    kept = (f"{len(excluded)} of {data.get('candidates')} nodes kept in float" if excluded
            else "no node kept in float")
    note = f" ({data['note']})" if data.get("note") else ""
    return f"int8={data.get('mode')}: {100 * share:.1f}% of Conv/MatMul/Gemm MACs in int8, {kept}{note}"


def parse_mode(value: Any) -> str:
    mode = "all" if value is None else str(value).strip().lower()
    if mode not in INT8_MODES:
        raise InputError(f"-O int8={value} is not one of {', '.join(INT8_MODES)}",
                         fix="use -O int8=auto (keep in float only what the gate needs) or -O int8=all")
    return mode


def build_int8(source: Path, out_path: Path, calibration: CalibrationData, *,
               settings: Int8Settings = Int8Settings(), min_cosine: float = 0.98,
               check_feeds: Mapping[str, np.ndarray] | None = None, method: str = "minmax",
               percentile: float = 99.999, per_channel: bool = True,
               op_types: tuple[str, ...] = DEFAULT_QUANT_OPS) -> Int8Result:
    """Write the int8 graph of `source` to `out_path` (`calibration` already bound to its
    signature); see the module docstring. `check_feeds`: the conversion check's inputs, which
    auto's plan must meet `min_cosine` on (with `settings.plan_samples` calibration samples)."""
    import onnx

    if settings.mode == "auto" and check_feeds is None:
        raise InputError("int8=auto needs the feeds its gate is measured on", fix="pass check_feeds")
    quant: dict[str, Any] = dict(method=method, percentile=percentile, per_channel=per_channel, op_types=op_types,
                 activations=settings.activations, reduce_range=settings.reduce_range)
    model = onnx.load(str(source))
    ranges: RangeTable | None = None
    if method == "mse":
        # which tensors ONNX Runtime quantizes: a first graph from one feed (its ranges unused)
        quantize_int8(source, out_path, CalibrationData(calibration.feeds[:1], calibration.source),
                      **{**quant, "method": "minmax"})
        tensors = activation_tensors(onnx.load(str(out_path), load_external_data=False))
        ranges = calibrate_ranges(model, tensors, calibration.feeds, method="mse",
                                  symmetric=settings.activations == "int8")
    counts = quantize_int8(source, out_path, calibration, ranges=ranges, **quant)
    plan, excluded, note, described = None, [], None, None
    if settings.mode == "auto":
        assert check_feeds is not None  # checked on entry
        feeds = [dict(check_feeds)]
        extra = _stack(calibration.feeds[:settings.plan_samples])
        described = "the check inputs"
        if extra is not None and settings.plan_samples > 0:
            feeds.append(extra)
            described += f" and {min(settings.plan_samples, len(calibration))} calibration sample(s)"
        aim = 1 - (1 - min_cosine) * (1 - settings.plan_margin)
        plan = plan_int8(model, onnx.load(str(out_path)), feeds, min_cosine=aim, op_types=op_types,
                         max_runs=settings.max_runs or DEFAULT_MAX_RUNS)
        if plan.excluded and (plan.int8_mac_share or 0) < settings.min_share:
            note = (f"not applied: the plan meets cosine {aim:.4g} (gate {min_cosine} with a margin) only with "
                    f"{100 * (plan.int8_mac_share or 0):.1f}% of the MACs in int8, under int8_min_share "
                    f"{100 * settings.min_share:.0f}%")
        elif plan.excluded:
            excluded = list(plan.excluded)
            counts = quantize_int8(source, out_path, calibration, ranges=ranges, nodes_to_exclude=excluded,
                                   **quant)
    final = onnx.load(str(out_path), load_external_data=False)
    batch = next((int(v.shape[0]) for v in (check_feeds or {}).values() if np.ndim(v)), 1)
    int8_macs, total = _mac_totals(model, set(quantized_nodes(final, op_types)), op_types, batch)
    return Int8Result(settings.mode, counts, settings.activations, settings.reduce_range,
                      int8_macs / total if total else None, int8_macs if total else None, total or None,
                      excluded, plan.to_json() if plan is not None else None,
                      calibration_table(final, ranges), settings.min_share if settings.mode == "auto" else None,
                      described, note)


def _stack(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    """The feeds as one batch (axis 0), or None when their shapes or dtypes differ past it."""
    if not feeds:
        return None
    first = feeds[0]
    for f in feeds[1:]:
        if set(f) != set(first) or any(np.ndim(f[k]) == 0 or f[k].shape[1:] != first[k].shape[1:]
                                       or f[k].dtype != first[k].dtype for k in first):
            return None
    if any(np.ndim(v) == 0 for v in first.values()):
        return None if len(feeds) > 1 else dict(first)
    return {k: np.concatenate([f[k] for f in feeds]) for k in first}


def _mac_totals(model: onnx.ModelProto, int8: set[str], op_types: tuple[str, ...],
                batch: int) -> tuple[float, float]:
    """MACs of the int8 nodes and of every `op_types` node (vlc.flops counts FLOPs = 2 MACs)."""
    flops = _node_flops(model, batch)
    names = [n.name for n in model.graph.node if n.op_type in op_types]
    total = sum(flops.get(n) or 0 for n in names) / 2
    return sum(flops.get(n) or 0 for n in names if n in int8) / 2, total


def ort_int8_kernels(optimized: onnx.ModelProto | str | Path, source: onnx.ModelProto) -> set[str]:
    """Nodes of `source` that ONNX Runtime's optimized graph runs as int8 kernels (QLinearConv,
    QLinearMatMul, MatMulIntegerToFloat, QGemm, ...): it names a fused node after the node it
    replaces (`<name>_token_<k>` or `<name>_quant`)."""
    import onnx

    graph = optimized if isinstance(optimized, onnx.ModelProto) else onnx.load(str(optimized),
                                                                               load_external_data=False)
    int8_ops = {"QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "ConvInteger",
                "MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}
    fused = [n.name for n in graph.graph.node if n.op_type in int8_ops]
    found = set()
    for node in source.graph.node:
        if node.name and any(f == node.name or f.startswith(node.name + "_token_")
                             or f == node.name + "_quant" for f in fused):
            found.add(node.name)
    return found


def ort_kernel_share(optimized_path: Path, source: onnx.ModelProto, batch: int = 1,
                     op_types: tuple[str, ...] = DEFAULT_QUANT_OPS) -> dict[str, Any]:
    """Share of `source`'s Conv/MatMul/Gemm MACs that ONNX Runtime runs in int8 kernels."""
    kernels = ort_int8_kernels(optimized_path, source)
    int8_macs, total = _mac_totals(source, kernels, op_types, batch)
    return {"mac_share": int8_macs / total if total else None, "nodes": len(kernels),
            "note": "Conv/MatMul/Gemm nodes ONNX Runtime's optimized graph runs as int8 kernels "
                    "(QLinearConv, QLinearMatMul, MatMulIntegerToFloat, QGemm)"}
