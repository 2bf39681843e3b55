"""Where the time goes: ONNX Runtime's own profiler, aggregated per operator type."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def profile_operators(model_path: Path, session_options: Any, providers: list[Any],
                      feeds: Mapping[str, np.ndarray], iterations: int = 10,
                      disabled_optimizers: list[str] | None = None) -> dict[str, Any]:
    """Per operator type: milliseconds per run as ONNX Runtime's profiler records them, node count,
    share of the total. A separate session without CUDA graphs, whose replays would hide the nodes.

    On the CPU provider that is each node's compute time. On the CUDA provider the pip build
    records host-side (launch) time, not GPU kernel time: `time_kind` in the result says which."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        session_options.enable_profiling = True
        session_options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model_path), session_options, providers=providers,
                                       disabled_optimizers=disabled_optimizers or [])
        inputs = {i.name: feeds[i.name] for i in session.get_inputs()}
        for _ in range(iterations + 1):
            session.run(None, inputs)
        events = _node_events(session.end_profiling())
    # every run executes the same nodes: drop the first (warm-up) run's share of the events
    events = events[len(events) // (iterations + 1):]
    per_op: dict[str, float] = defaultdict(float)
    nodes: dict[str, set[str]] = defaultdict(set)
    for event in events:
        op = event["args"].get("op_name", "?")
        per_op[op] += event["dur"] / 1000.0 / iterations
        nodes[op].add(event["name"])
    total = sum(per_op.values()) or 1.0
    on_cuda = any((p[0] if isinstance(p, tuple) else p) == "CUDAExecutionProvider" for p in providers)
    return {"iterations": iterations, "total_ms": total,
            "time_kind": "host-side node time (CUDA launches)" if on_cuda else "node compute time (CPU)",
            "operators": [{"op": op, "ms_per_run": ms, "share": ms / total, "nodes": len(nodes[op])}
                          for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])]}


def _node_events(trace_file: str) -> list[dict[str, Any]]:
    events = json.loads(Path(trace_file).read_text())
    return [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
