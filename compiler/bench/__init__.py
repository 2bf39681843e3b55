"""Benchmark sweeps: one model over targets x precisions x batch sizes, one record per cell.

    from vlc.bench import BenchConfig, run_bench
    summary = run_bench(BenchConfig("tests/models.py:mlp", ["torch", "onnxruntime"], ["fp32"], [1, 8]))

Records go to BenchConfig.results (vlc.records layout); `vlc report` turns them into tables.
"""

from vlc.bench.runner import Bench, BenchConfig, BenchSummary, run_bench
from vlc.measure import fill_timing

__all__ = ["Bench", "BenchConfig", "BenchSummary", "fill_timing", "run_bench"]
