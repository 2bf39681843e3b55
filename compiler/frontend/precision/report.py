"""ConversionReport: what a precision conversion changed and how close the result stays to fp32."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vlc.accuracy import AccuracyReport
from vlc.frontend.precision.int8 import int8_summary


@dataclass
class ConversionReport:
    """One conversion; `to_json()` is what targets put into the manifest (extra["precision"])."""

    precision: str
    source: str
    output: str
    tool: str  # what did the rewrite, with its version
    seconds: float = 0.0
    nodes_total: int = 0
    nodes_low_precision: int = 0  # fp16/bf16 nodes, or quantized nodes for int8
    fp32_ops: dict[str, int] = field(default_factory=dict)  # op type -> nodes kept in fp32
    layernorm_islands: int = 0  # decomposed LayerNorm / RMSNorm patterns kept in fp32
    casts_inserted: int = 0
    constants_clamped: int = 0  # values outside the low-precision range, clamped to its max
    constants_clamped_names: list[str] = field(default_factory=list)
    constants_flushed: int = 0  # tiny non-zero values raised to the smallest subnormal
    qdq_nodes: int = 0
    method: str | None = None  # int8 calibration method
    calibration: dict[str, Any] | None = None
    check: dict[str, Any] = field(default_factory=dict)  # how the accuracy check ran
    accuracy: AccuracyReport | None = None
    # fp16: the same check with every fp16 tensor rounded (and ranged) where produced, all math in
    # fp32 (check.emulate_low_precision); ONNX Runtime's CPU run above hides fp16 overflow
    emulated_accuracy: AccuracyReport | None = None
    warnings: list[str] = field(default_factory=list)
    unchanged: bool = False  # fp32 / tf32: the graph was copied as it is
    # islands=auto: the search's record (islands.IslandSearch.to_json): the fp32 nodes chosen,
    # the static set's size, the numbers of both, and what the search cost
    islands: dict[str, Any] | None = None
    # int8: how the graph was built (int8.Int8Result.to_json): mode, MAC share in int8, nodes kept
    # in float, the auto plan, the calibration table
    int8: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """True when the check ran and passed (emulated too, where it ran), or the graph is unchanged."""
        if self.accuracy is None:
            return self.unchanged
        return self.accuracy.passed and (self.emulated_accuracy is None or self.emulated_accuracy.passed)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["accuracy"] = self.accuracy.to_json() if self.accuracy is not None else None
        data["emulated_accuracy"] = self.emulated_accuracy.to_json() if self.emulated_accuracy is not None else None
        data["passed"] = self.passed
        return data

    def summary(self) -> str:
        """One line for logs: what changed and the worst accuracy numbers."""
        parts = [f"{self.precision} via {self.tool}: {self.nodes_low_precision}/{self.nodes_total} nodes"]
        if self.fp32_ops:
            parts.append(f"fp32 kept for {sum(self.fp32_ops.values())} nodes "
                         f"({', '.join(f'{k} x{v}' for k, v in sorted(self.fp32_ops.items()))})")
        if self.islands is not None:
            chosen, static = self.islands["chosen"], self.islands["static"]
            parts.append(f"islands=auto kept {chosen['fp32_nodes']} nodes in fp32 (static islands "
                         f"{static['fp32_nodes']}; {self.islands['search']['evaluations']} runs, "
                         f"{self.islands['search']['seconds']} s)")
        if self.int8 is not None:
            parts.append(int8_summary(self.int8))
        if self.constants_clamped:
            parts.append(f"{self.constants_clamped} constants clamped")
        if self.accuracy is not None and self.accuracy.outputs:
            worst = self.accuracy.worst()
            parts.append(f"vs fp32: min cosine {worst['min_cosine']:.6f}, max abs {worst['max_abs']:.3g}"
                         + (f" (emulated storage: min cosine {self.emulated_accuracy.worst()['min_cosine']:.6f})"
                            if self.emulated_accuracy is not None and self.emulated_accuracy.outputs else "")
                         + f" ({'pass' if self.passed else 'FAIL'})")
        return "; ".join(parts)
