"""The onnxruntime target's int8 build: its options as convert() takes them, and what ONNX
Runtime then runs in int8 on this machine.

The graph is built for ONNX Runtime's own kernels unless the TensorRT provider is asked for:
asymmetric uint8 activations (its x86 QLinearConv runs only on u8 x s8) with 7-bit weights
(`int8_reduce_range`: the u8 x s8 pair sums of its AVX2 kernels, used on CPUs without VNNI,
saturate 16 bits with full-range weights), ranges by least squared error per tensor, and
`int8=auto`: the nodes that cost most accuracy per MAC kept in float until the gate is met.
With the TensorRT provider the graph is TensorRT's form: symmetric int8 activations, 8-bit
weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlc.accuracy import compare_outputs
from vlc.target import CompileSource

TENSORRT = "TensorrtExecutionProvider"
# the option choices as vlc.frontend.precision.int8 and .quantize name them; not imported from
# there, since that package loads onnx and `vlc targets` lists options without it
INT8_MODES = ("auto", "all")
INT8_METHODS = ("mse", "minmax", "entropy", "percentile")


def int8_convert_args(source: CompileSource, options: Mapping[str, Any], providers: list[Any]) -> dict[str, Any]:
    """convert()'s int8 arguments from the target's options: calibration, method and settings."""
    from vlc.frontend.precision import CalibrationData, Int8Settings  # local: loads onnx

    if options["calibration"]:
        calibration = CalibrationData.from_option(options["calibration"])
    else:
        calibration = CalibrationData.generate(source.model if source.model is not None else list(source.input_specs),
                                               batches=options["calibration_batches"])
    tensorrt = any((p[0] if isinstance(p, (tuple, list)) else p) == TENSORRT for p in providers)
    activations = options["int8_activations"] or ("int8" if tensorrt else "uint8")
    reduce_range = options["int8_reduce_range"]
    if reduce_range is None:
        reduce_range = activations == "uint8"
    settings = Int8Settings(mode=options["int8"], activations=activations, reduce_range=reduce_range,
                            min_share=options["int8_min_share"])
    return {"calibration": calibration, "method": options["calibration_method"], "int8": settings}


def runtime_int8(main: Path, optimized: Path | None, source: CompileSource, session: Any,
                 feeds: Mapping[str, np.ndarray], tolerance: Any) -> dict[str, Any]:
    """What this machine's ONNX Runtime makes of the int8 graph: the share of Conv/MatMul/Gemm
    MACs its optimized graph runs as int8 kernels, and the outputs of the target's own session
    (fused kernels) against fp32 on `feeds`. The conversion check runs Q/DQ by their definition,
    which is what every machine computes only where the kernels do not saturate."""
    import onnx

    from vlc.frontend.precision.check import run_onnx  # local: loads onnx
    from vlc.frontend.precision.int8 import ort_kernel_share  # local: loads onnx

    fp32 = onnx.load(str(source.onnx_path), load_external_data=False)
    result: dict[str, Any] = {}
    if optimized is not None and optimized.is_file():
        batch = next((int(v.shape[0]) for v in feeds.values() if np.ndim(v)), 1)
        result["kernels"] = ort_kernel_share(optimized, fp32, batch)
    names = [o.name for o in session.get_outputs()]
    inputs = {i.name: np.asarray(feeds[i.name]) for i in session.get_inputs()}
    actual = dict(zip(names, session.run(names, inputs)))
    report = compare_outputs(actual, run_onnx(source.onnx_path, feeds), tolerance)
    worst = report.worst()
    result["session_check"] = {"min_cosine": worst["min_cosine"], "max_abs": worst["max_abs"],
                               "passed": report.passed, "providers": list(session.get_providers()),
                               "note": "the artifact's own ONNX Runtime session (fused int8 kernels) on "
                                       "the check inputs, against the fp32 graph"}
    return result


def runtime_line(data: Mapping[str, Any]) -> str:
    """One line for the build log and the compile summary."""
    parts = []
    if (kernels := data.get("kernels")) and kernels.get("mac_share") is not None:
        parts.append(f"ONNX Runtime runs {100 * kernels['mac_share']:.1f}% of the MACs in int8 kernels")
    if check := data.get("session_check"):
        parts.append(f"its session here: min cosine {check['min_cosine']:.6f} "
                     f"({'pass' if check['passed'] else 'FAIL'})")
    return "; ".join(parts)
