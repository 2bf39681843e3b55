"""The normalized graph of an ONNX file against the untouched file, in ONNX Runtime.

What `vlc export` checks against PyTorch for a PyTorch model, it checks against the user's own
file for an ONNX model: same inputs (the specs derived from the graph), both graphs on ONNX
Runtime's CPU provider, every output compared at fp32 tolerance. A mismatch stops the front end:
a rewrite that changes results must never reach a target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlc.accuracy import AccuracyReport, compare_outputs, default_tolerance
from vlc.errors import ExportError, first_line
from vlc.measure import onnx_cpu_outputs
from vlc.model import InputSpec
from vlc.spec import Precision

REFERENCE = "the original file in ONNX Runtime (CPU, fp32)"


@dataclass
class OnnxParity:
    report: AccuracyReport | None
    skipped: str = ""  # why there is no comparison (the original cannot run in ONNX Runtime)
    batch: int = 1

    def to_json(self) -> dict[str, Any]:
        if self.report is None:
            return {"reference": REFERENCE, "skipped": self.skipped}
        return {"reference": REFERENCE, "batch": self.batch, **self.report.to_json()}


def onnx_parity(original: Path, normalized: Path, specs: Sequence[InputSpec], *,
                batches: Sequence[int] = (2, 1), seed: int = 1) -> OnnxParity:
    """Both graphs on the same generated inputs: at batch 2 (the batch axis exercised) when the
    original takes it, else batch 1."""

    last = ""
    for batch in batches:
        rng = np.random.default_rng(seed)
        feeds = {s.name: s.generate(batch, rng) for s in specs}
        try:
            reference = onnx_cpu_outputs(original, feeds)
        except Exception as exc:  # noqa: BLE001 - the original's own failure decides "skipped"
            last = first_line(exc, limit=200)
            continue
        try:
            actual = onnx_cpu_outputs(normalized, feeds)
        except Exception as exc:  # noqa: BLE001 - the original ran on these inputs, so it is ours
            raise ExportError(f"the normalized graph fails in ONNX Runtime where the original runs: "
                              f"{first_line(exc, limit=200)}",
                              fix="try --no-simplify or --passes '' and report the model") from None
        if set(reference) != set(actual) and len(reference) == len(actual):
            actual = dict(zip(reference, actual.values()))  # outputs renamed: compare in order
        return OnnxParity(compare_outputs(actual, reference, default_tolerance(Precision.FP32)), batch=batch)
    return OnnxParity(None, skipped=f"the original does not run in ONNX Runtime on generated inputs ({last})")
