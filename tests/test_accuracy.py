"""vlc.accuracy.compare_outputs, the numeric oracle of the suite: one test per rule, each on a
candidate that every other rule would pass, so removing that one rule makes its test fail."""

from __future__ import annotations

import numpy as np
import pytest

from vlc.accuracy import Tolerance, compare_outputs, default_tolerance
from vlc.spec import Precision

FP32 = default_tolerance(Precision.FP32)
COSINE_ONLY = Tolerance(min_cosine=0.999, atol=None, rtol=None)


def reference(size: int = 100_000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(size).astype(np.float32)


def judge(actual: np.ndarray, ref: np.ndarray, tol: Tolerance = FP32, name: str = "y"):
    report = compare_outputs({name: actual}, {name: ref}, tol)
    assert len(report.outputs) == 1
    return report, report.outputs[0]


def test_a_close_candidate_passes():
    ref = reference()
    noise = np.random.default_rng(1).standard_normal(ref.size).astype(np.float32) * 1e-6
    report, out = judge(ref + noise, ref)
    assert report.passed and out.passed and out.reason == ""
    assert out.mismatched == 0 and out.cosine > 0.99999


def test_cosine_below_the_threshold_fails():
    # the candidate differs everywhere by a little: no element is off by more than atol/rtol allow
    ref = reference()
    tol = Tolerance(min_cosine=0.9999999, atol=1e-1, rtol=1e-1)
    noise = np.random.default_rng(2).standard_normal(ref.size).astype(np.float32) * 1e-3
    report, out = judge(ref + noise, ref, tol)
    assert out.mismatched == 0
    assert out.cosine < tol.min_cosine
    assert not report.passed and "cosine" in out.reason and "< 0.9999999" in out.reason


def test_one_element_off_by_half_in_100k_fails_elementwise():
    ref = reference()
    actual = ref.copy()
    actual[12_345] += 0.5
    report, out = judge(actual, ref)
    assert out.cosine > FP32.min_cosine  # the cosine alone would pass it
    assert out.mismatched == 1 and out.total == 100_000
    assert not report.passed and "1 of 100000 elements outside atol" in out.reason


def test_rtol_scales_with_the_reference():
    ref = reference() * 1000
    actual = ref * (1 + 5e-4)  # within rtol 1e-3 everywhere, far outside atol alone
    report, out = judge(actual, ref)
    assert report.passed, out.reason
    report, out = judge(ref * (1 + 5e-3), ref, Tolerance(min_cosine=0.9, atol=1e-4, rtol=1e-3))
    assert not report.passed and out.mismatched > 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_the_candidate_fails(bad):
    # cosine-only (int8's tolerance), where nothing element-wise would catch it
    ref = reference()
    actual = ref.copy()
    actual[7] = bad
    report, out = judge(actual, ref, COSINE_ONLY)
    assert not report.passed and "output has NaN or Inf" in out.reason


def test_nan_in_the_reference_proves_nothing():
    ref = reference()
    ref[3] = np.nan
    report, out = judge(np.nan_to_num(ref), ref, COSINE_ONLY)
    assert not report.passed and "reference has NaN or Inf" in out.reason


@pytest.mark.parametrize("value", [0.0, 1.0, 0.1, -3e5])
def test_a_constant_reference_is_judged_by_its_error_not_cosine(value):
    """Saturated outputs (a detector's empty probability map) and outputs that are one value per
    batch have no cosine worth the name: a correct model passes on its error, with a note saying
    how it was judged; a wrong value fails."""
    ref = np.full(1000, value, np.float32)
    report, out = judge(ref.copy(), ref)
    assert report.passed, out.reason
    assert "constant" in out.note and "not cosine" in out.note and "--input" in out.note
    wrong = ref + 1.0 + abs(value)  # outside atol + rtol*|ref| at every magnitude
    report, out = judge(wrong, ref)
    assert not report.passed and "elements outside atol" in out.reason


def test_a_constant_reference_without_elementwise_tolerance_is_judged_relatively():
    ref = np.full(64, 3.0, np.float32)
    report, out = judge(ref * 1.02, ref, COSINE_ONLY)  # int8-like: no atol/rtol, 2% off passes
    assert report.passed, out.reason
    assert "relative error" in out.note
    report, out = judge(ref * 1.5, ref, COSINE_ONLY)
    assert not report.passed and "relative" in out.reason


def test_a_reference_of_small_magnitude_with_spread_is_judged():
    ref = reference(1000) * 1e-9  # e.g. tiny probabilities: spread relative to their size
    report, out = judge(ref * (1 + 1e-6), ref)
    assert report.passed, out.reason
    actual = ref.copy()
    actual[:500] = -actual[:500]
    report, out = judge(actual, ref, COSINE_ONLY)
    assert not report.passed and "cosine" in out.reason


def test_a_one_element_output_is_judged_elementwise():
    ref = np.array([2.5], np.float32)
    assert judge(np.array([2.5001], np.float32), ref)[0].passed
    report, out = judge(np.array([2.6], np.float32), ref)
    assert not report.passed and "elements outside atol" in out.reason
    report, out = judge(np.array([2.5], np.float32), ref, COSINE_ONLY)
    assert report.passed and "one value" in out.note
    report, out = judge(np.array([-2.5], np.float32), ref, COSINE_ONLY)
    assert not report.passed and "relative" in out.reason


def test_a_missing_output_fails_and_names_what_was_given():
    ref = reference(100)
    report = compare_outputs({"logits": ref}, {"logits": ref, "boxes": ref}, FP32)
    by_name = {o.name: o for o in report.outputs}
    assert by_name["logits"].passed
    assert not by_name["boxes"].passed and "output missing; got logits" in by_name["boxes"].reason
    assert not report.passed


def test_no_outputs_at_all_is_not_a_pass():
    assert not compare_outputs({}, {}, FP32).passed


@pytest.mark.parametrize("shape", [(1, 100), (100, 1), (99,)])
def test_a_shape_mismatch_fails(shape):
    ref = reference(100)
    actual = np.resize(ref, shape)  # (1,100) holds the same values in another shape
    report, out = judge(actual, ref)
    assert not report.passed and f"shape {list(shape)} differs from reference [100]" in out.reason


def test_integer_outputs_must_match_exactly():
    ref = np.arange(100, dtype=np.int64)
    assert judge(ref.copy(), ref)[0].passed
    actual = ref.copy()
    actual[5] += 1
    report, out = judge(actual, ref)
    assert not report.passed and out.reason == "1 of 100 elements differ"


def test_every_output_is_judged():
    ref = reference(1000)
    good, bad = ref.copy(), ref.copy()
    bad[0] += 1.0
    report = compare_outputs({"a": good, "b": bad}, {"a": ref, "b": ref}, FP32)
    assert [o.passed for o in report.outputs] == [True, False] and not report.passed
