"""trtexec-style results: turn per-iteration timings into a ProfileResult and trtexec's summary.

Pure functions over numbers (no GPU), so the format and the statistics are tested anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vlc.timing import CV_WARN, HOST_CLOCK_SYNCED, LatencyStats, ProfileResult, variation_warning

# trtexec's names for ProfileResult.breakdown keys, in its order
TRTEXEC_ROWS = (("latency", "Latency"), ("enqueue", "Enqueue Time"), ("h2d", "H2D Latency"),
                ("compute", "GPU Compute Time"), ("d2h", "D2H Latency"))


def assemble(batch: int, device: str, samples: Mapping[str, Sequence[float]], *, include_transfers: bool,
             host_walltime_s: float, cuda_graph: bool,
             per_layer: Mapping[str, Sequence[float]] | None = None) -> ProfileResult:
    """samples: ms per iteration; "latency" by the host clock (first copy or launch to the stream
    synchronisation), "h2d", "compute", "d2h" by CUDA events (h2d/d2h empty without transfers),
    "enqueue" by the host clock around the launch. Only "latency" is required (an engine with
    data-dependent output shapes has no CUDA-event breakdown)."""
    latency = LatencyStats.from_samples(samples["latency"])
    breakdown = {key: LatencyStats.from_samples(values) for key, values in samples.items()
                 if key != "latency" and len(values)}
    compute = breakdown.get("compute")
    iterations = latency.count
    extra = {
        "timing": HOST_CLOCK_SYNCED,
        "timing_detail": "latency by the host clock from the first copy or launch to the stream "
                         "synchronisation of each iteration, "
                         + ("H2D + GPU compute + D2H" if include_transfers else "inputs and outputs on the GPU")
                         + "; the H2D / GPU compute / D2H breakdown by CUDA events on the same stream",
        "cuda_graph": cuda_graph,
        "throughput_qps": iterations / host_walltime_s if host_walltime_s > 0 else 0.0,
        "total_host_walltime_s": host_walltime_s,
        "total_gpu_compute_time_s": sum(samples["compute"]) / 1000.0 if compute else None,
    }
    if per_layer:
        total = sum(sum(v) / len(v) for v in per_layer.values() if len(v)) or 1.0
        means = sorted(((sum(v) / len(v), name, v) for name, v in per_layer.items() if len(v)),
                       key=lambda item: -item[0])
        extra["layers"] = [{"name": name, "mean_ms": mean, "median_ms": LatencyStats.from_samples(v).median,
                            "percent": 100.0 * mean / total} for mean, name, v in means]
    result = ProfileResult(batch=batch, latency=latency, includes_transfers=include_transfers,
                           breakdown=breakdown, device=device,
                           warnings=variation_warning(compute, "GPU compute time") if compute else [],
                           extra=extra)
    result.extra["trtexec_summary"] = trtexec_summary(result)
    return result


def _row(label: str, stats: LatencyStats) -> str:
    return (f"{label}: min = {stats.min:.5g} ms, max = {stats.max:.5g} ms, mean = {stats.mean:.5g} ms, "
            f"median = {stats.median:.5g} ms, percentile(90%) = {stats.p90:.5g} ms, "
            f"percentile(95%) = {stats.p95:.5g} ms, percentile(99%) = {stats.p99:.5g} ms")


def trtexec_summary(result: ProfileResult) -> str:
    """trtexec's "Performance summary" block, with its field names and units."""
    lines = ["=== Performance summary ===",
             f"Throughput: {result.extra.get('throughput_qps', 0.0):.5g} qps"]
    rows = {"latency": result.latency, **result.breakdown}
    for key, label in TRTEXEC_ROWS:
        if key in rows:
            lines.append(_row(label, rows[key]))
    lines.append(f"Total Host Walltime: {result.extra.get('total_host_walltime_s', 0.0):.5g} s")
    if "compute" in result.breakdown:  # no CUDA-event breakdown: no GPU compute time to total
        lines.append(f"Total GPU Compute Time: {result.extra.get('total_gpu_compute_time_s', 0.0):.5g} s")
    out = [f"[I] {line}" for line in lines]
    compute = result.breakdown.get("compute")
    if compute is not None and compute.cv > CV_WARN:
        out.append(f"[W] * GPU compute time is unstable, with coefficient of variance = {100 * compute.cv:.5g}%.")
        out.append("[W]   If not already in use, locking GPU clock frequency may improve the stability.")
    if not result.includes_transfers:
        out.append("[I] Latency excludes host-device transfers (GPU compute only).")
    return "\n".join(out)
