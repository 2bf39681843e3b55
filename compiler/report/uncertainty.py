"""How sure a speed-up is: a bootstrap interval of the ratio of medians from the raw samples.

Each record keeps the times of its timed calls (`samples_ms`, vlc.records). A speed-up is the
baseline's median over the column's median; resampling both sets of calls with replacement
and taking the ratio of the resampled medians many times gives its spread, and the 2.5th and
97.5th percentiles of those ratios a 95% interval. The resampling treats the calls as
independent (a drifting clock or a neighbour's load makes the interval too narrow), and it is
seeded, so one set of records always gives one report. Records without samples (older ones,
timers that report only a summary) get no interval, and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlc.records import BenchRecord

RESAMPLES = 2000
LEVEL = 0.95
MIN_SAMPLES = 5  # fewer calls than this: no interval
SEED = 0


def samples(record: BenchRecord) -> np.ndarray:
    values = (record.samples_ms or {}).get("values") or []
    return np.asarray(values, dtype=np.float64)


def ratio_interval(base: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray, *,
                   resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> tuple[float, float] | None:
    """The `level` bootstrap interval of median(base) / median(other), or None with too few samples."""
    a, b = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.size < MIN_SAMPLES or b.size < MIN_SAMPLES or np.any(b <= 0):
        return None
    rng = np.random.default_rng(seed)
    med_a = np.median(a[rng.integers(0, a.size, (resamples, a.size))], axis=1)
    med_b = np.median(b[rng.integers(0, b.size, (resamples, b.size))], axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(med_a / med_b, [tail, 1.0 - tail])
    return float(low), float(high)


def speedup_interval(base: BenchRecord, record: BenchRecord) -> tuple[float, float] | None:
    """The 95% interval of base median / record median from their raw samples, or None."""
    return ratio_interval(samples(base), samples(record))
