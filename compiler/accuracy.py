"""Accuracy comparison of outputs against a reference, with precision-aware tolerances."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vlc.errors import InputError
from vlc.spec import Precision


@dataclass(frozen=True)
class Tolerance:
    """Pass when cosine >= min_cosine and, if atol/rtol are set, |a-r| <= atol + rtol*|r| everywhere."""

    min_cosine: float
    atol: float | None
    rtol: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Defaults fit each precision's rounding: fp16 is not held to fp32's 1e-5.
DEFAULT_TOLERANCES: dict[Precision, Tolerance] = {
    Precision.FP32: Tolerance(min_cosine=0.99999, atol=1e-4, rtol=1e-3),
    Precision.TF32: Tolerance(min_cosine=0.9999, atol=2e-2, rtol=2e-2),
    Precision.FP16: Tolerance(min_cosine=0.999, atol=5e-2, rtol=5e-2),
    Precision.BF16: Tolerance(min_cosine=0.995, atol=2e-1, rtol=1e-1),
    Precision.INT8: Tolerance(min_cosine=0.98, atol=None, rtol=None),
}


def default_tolerance(precision: Precision | str) -> Tolerance:
    return DEFAULT_TOLERANCES[Precision(precision)]


def tolerance_with(base: Tolerance, *, atol: float | None = None, rtol: float | None = None,
                   min_cosine: float | None = None) -> Tolerance:
    """`base` with the given overrides (as typed by a user: --atol, --rtol, --min-cosine)."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and not value >= 0:  # NaN too
            raise InputError(f"--{name} {value} must be >= 0", fix=f"give --{name} 0 or more, or leave it out")
    if min_cosine is not None and not -1 <= min_cosine <= 1:
        raise InputError(f"--min-cosine {min_cosine} is outside -1..1, so every comparison would fail",
                         fix="give a cosine such as 0.999, or leave it out")
    return Tolerance(min_cosine=base.min_cosine if min_cosine is None else min_cosine,
                     atol=base.atol if atol is None else atol,
                     rtol=base.rtol if rtol is None else rtol)


# A reference whose std is below this share of its largest magnitude is constant (to float
# rounding): any candidate near that constant passes, so the comparison proves nothing. Relative,
# so outputs of small magnitude (probabilities, 1e-8-scale features) with real spread still count.
SPREAD_MIN = 1e-6


@dataclass
class OutputStats:
    name: str
    shape: list[int]
    max_abs: float
    mean_abs: float
    median_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    cosine: float
    ref_std: float
    mismatched: int  # elements outside atol + rtol*|ref| (0 when not checked)
    total: int
    passed: bool
    reason: str = ""
    note: str = ""  # how the output was judged when not by cosine (a constant reference)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AccuracyReport:
    tolerance: Tolerance
    outputs: list[OutputStats] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "tolerance": self.tolerance.to_json(),
                "outputs": [o.to_json() for o in self.outputs]}

    def worst(self) -> dict[str, float]:
        return {"max_abs": max(o.max_abs for o in self.outputs),
                "median_rel": max(o.median_rel for o in self.outputs),
                "min_cosine": min(o.cosine for o in self.outputs)}


# A reference that is one value, or constant, has no cosine worth the name: it is judged by its
# error instead (atol + rtol*|ref|), so a correct model is never failed for the shape of its output
# (a 1x1 similarity logit) or for inputs that saturate it. int8 has no elementwise tolerance; such
# outputs get this relative one, about int8's step on a tensor of that magnitude.
CONSTANT_RTOL_INT8 = 0.1


def no_spread(ref: np.ndarray, ref_std: float) -> bool:
    """Whether a float reference is constant up to rounding (all zeros included)."""
    return ref_std <= SPREAD_MIN * float(np.max(np.abs(ref)))


def _stats(name: str, actual: np.ndarray, ref: np.ndarray, tol: Tolerance) -> OutputStats:
    if actual.shape != ref.shape:
        nan = float("nan")
        return OutputStats(name, list(actual.shape), nan, nan, nan, nan, nan, nan, nan, nan,
                           int(actual.size), int(ref.size), False,
                           f"shape {list(actual.shape)} differs from reference {list(ref.shape)}")
    a = actual.astype(np.float64).ravel()
    r = ref.astype(np.float64).ravel()
    if a.size == 0:
        return OutputStats(name, list(actual.shape), 0, 0, 0, 0, 0, 0, 1.0, 0.0, 0, 0, True,
                           "empty output")
    diff = np.abs(a - r)
    rel = diff / np.maximum(np.abs(r), 1e-12)
    finite = np.isfinite(a).all()
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf give a NaN cosine, judged below
        norm = np.linalg.norm(a) * np.linalg.norm(r)
        cosine = float(np.dot(a, r) / norm) if norm > 0 else (1.0 if np.array_equal(a, r) else 0.0)
    ref_std = float(np.std(r))
    if ref.dtype == np.bool_ or np.issubdtype(ref.dtype, np.integer):
        mismatched = int(np.count_nonzero(a != r))
        reason = "" if mismatched == 0 else f"{mismatched} of {a.size} elements differ"
        return OutputStats(name, list(actual.shape), float(diff.max()), float(diff.mean()),
                           float(np.median(diff)), float(rel.max()), float(rel.mean()),
                           float(np.median(rel)), cosine, ref_std, mismatched, int(a.size),
                           mismatched == 0, reason)
    elementwise = tol.atol is not None and tol.rtol is not None
    mismatched = 0
    if tol.atol is not None and tol.rtol is not None:
        mismatched = int(np.count_nonzero(~(diff <= tol.atol + tol.rtol * np.abs(r))))
    reasons = []
    note = ""
    if not finite:
        reasons.append("output has NaN or Inf")
    if not np.isfinite(r).all():
        reasons.append("reference has NaN or Inf; the comparison proves nothing")
    elif a.size == 1 or no_spread(r, ref_std):
        # one value, or one value everywhere: its cosine is only its sign, so its error judges it
        what = "one value" if a.size == 1 else f"constant {r[0]:.6g} on these inputs"
        if elementwise:
            note = (f"reference is {what}: judged by atol {tol.atol} + rtol {tol.rtol}, not cosine"
                    + ("" if a.size == 1 else "; pass real inputs with --input for a stronger check"))
        else:
            bound = CONSTANT_RTOL_INT8 * np.maximum(np.abs(r), float(np.max(np.abs(r))) or 1.0)
            mismatched = int(np.count_nonzero(~(diff <= bound)))
            note = f"reference is {what}: judged by relative error <= {CONSTANT_RTOL_INT8}, not cosine"
            if mismatched:
                reasons.append(f"{mismatched} of {a.size} elements off the {what} reference by more "
                               f"than {CONSTANT_RTOL_INT8:g} relative")
                mismatched = 0  # counted in the reason above
    elif not cosine >= tol.min_cosine:  # NaN fails too
        reasons.append(f"cosine {cosine:.6f} < {tol.min_cosine}")
    if mismatched:
        reasons.append(f"{mismatched} of {a.size} elements outside atol {tol.atol} + rtol {tol.rtol}")
    return OutputStats(name, list(actual.shape), float(diff.max()), float(diff.mean()),
                       float(np.median(diff)), float(rel.max()), float(rel.mean()),
                       float(np.median(rel)), cosine, ref_std, mismatched, int(a.size),
                       not reasons, "; ".join(reasons), note)


def compare_outputs(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                    tolerance: Tolerance) -> AccuracyReport:
    """Compare every reference output by name (missing outputs fail)."""
    report = AccuracyReport(tolerance)
    for name, ref in reference.items():
        if name not in actual:
            nan = float("nan")
            report.outputs.append(OutputStats(name, list(ref.shape), nan, nan, nan, nan, nan, nan,
                                              nan, nan, 0, int(ref.size), False,
                                              f"output missing; got {', '.join(actual)}"))
            continue
        report.outputs.append(_stats(name, np.asarray(actual[name]), np.asarray(ref), tolerance))
    return report
