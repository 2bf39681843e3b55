"""Accuracy debugging: where in the graph a candidate (fp16, int8, a compiled artifact) leaves
its reference.

    report = debug_accuracy("model.onnx", "artifacts/ort-fp16")
    report.first_divergent.node, report.first_divergent.op_type

Both graphs run in ONNX Runtime on the CPU with their intermediate tensors exposed in windows
(`layerwise`); what cannot be exposed is narrowed down by bisection (`bisect`), for a compiled
file by rebuilding it with marked outputs through its own target (`compiled`). For int8,
`int8_sensitivity` ranks the quantized nodes by what quantizing each one alone costs and
`plan_int8` keeps the least sensitive ones in int8 while the outputs meet a cosine gate.
"""

from vlc.debug.bisect import BisectResult, bisect_first_divergent, bisect_graphs
from vlc.debug.graph import GraphRunner
from vlc.debug.layerwise import (
                                 DEFAULT_WINDOW,
                                 LayerwiseReport,
                                 TensorComparison,
                                 compare_layerwise,
                                 compare_tensors,
                                 judge,
)
from vlc.debug.session import debug_accuracy, debug_inputs, debug_tolerance
from vlc.frontend.precision.sensitivity import Int8Plan, NodeSensitivity, int8_sensitivity, plan_int8

__all__ = ["BisectResult", "bisect_first_divergent", "bisect_graphs", "GraphRunner", "DEFAULT_WINDOW",
           "LayerwiseReport", "TensorComparison", "compare_layerwise", "compare_tensors", "judge", "debug_accuracy",
           "debug_inputs", "debug_tolerance", "NodeSensitivity", "int8_sensitivity",
           "Int8Plan", "plan_int8"]
