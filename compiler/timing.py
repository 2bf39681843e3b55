"""Latency statistics, profile settings and results, and the one timing method of every target.

Every target times a call with the host's monotonic clock; on a GPU the call ends with a
synchronisation, so a sample covers the work the call started. `host_profile` is that loop
with its result; each ProfileResult says in `extra["timing"]` how it was timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

CV_WARN = 0.025  # trtexec warns past 2.5% coefficient of variation
HOST_CLOCK = "host clock"
HOST_CLOCK_SYNCED = "host clock, synchronised after each call"


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds over `count` timed iterations."""

    count: int
    min: float
    max: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    std: float
    # the timed calls in the order they ran (from_samples keeps them; records keep a bounded copy)
    samples: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def cv(self) -> float:
        return self.std / self.mean if self.mean > 0 else 0.0

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.size == 0:
            raise ValueError("no timing samples")
        p90, p95, p99 = np.percentile(s, [90, 95, 99])
        return cls(int(s.size), float(s.min()), float(s.max()), float(s.mean()), float(np.median(s)),
                   float(p90), float(p95), float(p99), float(s.std()), tuple(float(v) for v in s))

    def to_json(self) -> dict[str, float]:
        data = asdict(self)
        del data["samples"]  # the summary; the samples themselves go to a record's samples_ms
        return {**data, "cv": self.cv}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyStats:
        return cls(**{k: data[k] for k in ("count", "min", "max", "mean", "median", "p90", "p95",
                                           "p99", "std")})


@dataclass(frozen=True)
class ProfileSettings:
    warmup: int = 10
    iterations: int = 50
    duration_s: float | None = None  # when set, time for this long instead of `iterations`
    warmup_s: float = 0.0  # minimum warm-up time on top of `warmup` iterations
    cuda_graph: bool = False
    per_layer: bool = False
    include_transfers: bool = True


@dataclass
class ProfileResult:
    batch: int
    latency: LatencyStats  # per call, what `includes_transfers` says
    includes_transfers: bool
    breakdown: dict[str, LatencyStats] = field(default_factory=dict)  # h2d, compute, d2h, enqueue
    device: str = "cpu"
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # per-layer times, host walltime, ...

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch * 1000.0 / self.latency.median if self.latency.median > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "device": self.device,
                "includes_transfers": self.includes_transfers,
                "latency_ms": self.latency.to_json(), "throughput_per_s": self.throughput,
                "breakdown_ms": {k: v.to_json() for k, v in self.breakdown.items()},
                "warnings": self.warnings, "extra": self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProfileResult:
        return cls(batch=data["batch"], latency=LatencyStats.from_json(data["latency_ms"]),
                   includes_transfers=data["includes_transfers"],
                   breakdown={k: LatencyStats.from_json(v) for k, v in data.get("breakdown_ms", {}).items()},
                   device=data.get("device", "cpu"), warnings=list(data.get("warnings", [])),
                   extra=dict(data.get("extra", {})))


def variation_warning(stats: LatencyStats, what: str) -> list[str]:
    if stats.cv > CV_WARN:
        return [f"{what} varies: coefficient of variation {stats.cv:.1%} > {CV_WARN:.1%}; "
                "results may be unstable (other load, clocks, too few iterations)"]
    return []


def time_host_calls(fn: Callable[[], Any], settings: ProfileSettings,
                    sync: Callable[[], None] = lambda: None,
                    after: Callable[[float | None], None] | None = None) -> list[float]:
    """Warm up, then time `fn` (followed by `sync`) per call with a monotonic clock; ms.

    `after` runs outside the timed region after every call, with the call's milliseconds (None
    during warm-up): where a runtime reads its own per-call breakdown (CUDA events)."""
    start = time.perf_counter()
    done = 0
    while done < settings.warmup or time.perf_counter() - start < settings.warmup_s:
        fn()
        sync()
        if after is not None:
            after(None)
        done += 1
    samples: list[float] = []
    deadline = None if settings.duration_s is None else time.perf_counter() + settings.duration_s
    while True:
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1000.0)
        if after is not None:
            after(samples[-1])
        if deadline is None:
            if len(samples) >= settings.iterations:
                break
        elif time.perf_counter() >= deadline and len(samples) >= 2:
            break
    return samples


def host_profile(call: Callable[[], Any], settings: ProfileSettings, batch: int, *, device: str,
                 includes_transfers: bool, sync: Callable[[], None] | None = None,
                 method: str | None = None) -> ProfileResult:
    """Time `call` (then `sync`) with the host clock and say so in `extra["timing"]`.

    `method` names the timing when it differs from the default wording: a CPU call is timed by
    the host clock alone; a device call (a `sync`, or a runtime that synchronises every call,
    as ONNX Runtime CUDA does) is timed up to the end of the device work."""
    samples = time_host_calls(call, settings, sync if sync is not None else (lambda: None))
    stats = LatencyStats.from_samples(samples)
    if method is None:
        method = HOST_CLOCK if device == "cpu" and sync is None else HOST_CLOCK_SYNCED
    return ProfileResult(batch=batch, latency=stats, includes_transfers=includes_transfers, device=device,
                         warnings=variation_warning(stats, "latency"), extra={"timing": method})
