"""int8 explicit quantization: Q/DQ nodes (QDQ format) from calibration data.

Built on ONNX Runtime's static quantization (onnxruntime.quantization.quantize_static), set up
the way TensorRT consumes Q/DQ graphs by default: signed int8, symmetric (zero point 0)
activations and weights, per-channel weight scales, weights stored as int8 initializers behind a
DequantizeLinear, biases left in float, and only the compute-heavy ops (Conv, Gemm, MatMul)
quantized so that TensorRT fuses the rest around them.

`activations="uint8"` gives asymmetric uint8 activations instead (ONNX Runtime's CPU kernels
take u8 x s8: its x86 QLinearConv runs only on those), and `reduce_range` 7-bit weights, so
that the u8 x s8 pair sums of x86 AVX2 kernels (VPMADDUBSW, on CPUs without VNNI) cannot
saturate their 16 bits. `ranges` (a calibration.RangeTable) fixes each activation's range
instead of ONNX Runtime's calibrator.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlc.errors import InputError
from vlc.frontend.precision.calibration import CalibrationData, RangeTable

METHODS = ("minmax", "entropy", "percentile", "mse")  # mse: vlc's ranges (calibration.mse_range)
ORT_METHODS = ("minmax", "entropy", "percentile")
ACTIVATIONS = ("int8", "uint8")
DEFAULT_QUANT_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
OUTPUT_SUFFIX = "_QuantizeLinear_Input"

if TYPE_CHECKING:  # onnx is imported where it is used: `vlc targets` lists options without it
    import onnx  # ONNX Runtime renames a quantized graph output's producer


def quantize_int8(source: Path, out_path: Path, calibration: CalibrationData, *, method: str = "minmax",
                  percentile: float = 99.999, per_channel: bool = True,
                  op_types: tuple[str, ...] = DEFAULT_QUANT_OPS,
                  nodes_to_exclude: list[str] | None = None, activations: str = "int8",
                  reduce_range: bool = False, ranges: RangeTable | None = None) -> dict[str, int]:
    """Write a QDQ graph to `out_path`; return counts of Q/DQ nodes and quantized ops.

    With `ranges`, every activation they name gets that range (ONNX Runtime's MinMax calibrator
    still runs, for any tensor they miss); `method` is then only recorded."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in METHODS:
        raise InputError(f"unknown calibration method '{method}'", fix=f"use one of: {', '.join(METHODS)}")
    if method not in methods and ranges is None:
        raise InputError(f"calibration method '{method}' needs vlc's range table",
                         fix="pass ranges=calibration.calibrate_ranges(...)")
    if activations not in ACTIVATIONS:
        raise InputError(f"int8 activations '{activations}' are not one of {', '.join(ACTIVATIONS)}",
                         fix="use int8 (symmetric, as TensorRT takes them) or uint8 (asymmetric)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(calibration.feeds)

        def get_next(self):
            return next(self._feeds, None)

    symmetric = activations == "int8"
    extra: dict[str, Any] = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": False,
                             "AddQDQPairToWeight": False, "DedicatedQDQPair": False}
    if method == "percentile" and ranges is None:
        extra["CalibPercentile"] = percentile
    if ranges is not None:
        extra["TensorQuantOverrides"] = ranges.ort_overrides()
    model = onnx.load(str(source))
    large = model.ByteSize() > 1_800_000_000
    with tempfile.TemporaryDirectory(prefix="vlc-quant-") as tmp, _quiet_root_logger():
        inferred = Path(tmp) / "inferred.onnx"
        if large:
            onnx.shape_inference.infer_shapes_path(str(source), str(inferred))
        else:
            onnx.save(onnx.shape_inference.infer_shapes(model), str(inferred))
        quantize_static(str(inferred), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), per_channel=per_channel,
                        reduce_range=reduce_range,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        nodes_to_exclude=nodes_to_exclude or [],
                        calibrate_method=methods.get(method, CalibrationMethod.MinMax),
                        use_external_data_format=large, extra_options=extra)
    quantized = onnx.load(str(out_path), load_external_data=False)
    ops = Counter(n.op_type for n in quantized.graph.node)
    return {"quantize_linear": ops["QuantizeLinear"], "dequantize_linear": ops["DequantizeLinear"],
            "quantized_nodes": len(quantized_nodes(quantized, op_types)),
            "candidates": sum(1 for n in quantized.graph.node if n.op_type in op_types)}


def quantized_nodes(model: onnx.ModelProto, op_types: tuple[str, ...] = DEFAULT_QUANT_OPS) -> list[str]:
    """Names of the `op_types` nodes whose every float input is dequantized (int8 compute)."""
    g = model.graph
    dq_outputs = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    found = []
    for n in g.node:
        if n.op_type not in op_types:
            continue
        data = [i for i in n.input[:2] if i]  # X and W (A and B); a bias stays in float
        if data and all(i in dq_outputs for i in data):
            found.append(n.name)
    return found


def activation_tensors(model: onnx.ModelProto) -> list[str]:
    """The activations a Q/DQ graph quantizes, by their names in the source graph."""
    inits = {i.name for i in model.graph.initializer}
    names = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    return list(dict.fromkeys(name.removesuffix(OUTPUT_SUFFIX) for name in names))


def calibration_table(model: onnx.ModelProto, ranges: RangeTable | None = None) -> dict[str, Any]:
    """The calibration table as the Q/DQ graph holds it: each activation's scale, zero point, int8
    type and the range that represents, with the observed and chosen range where vlc measured
    them (`ranges`)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    table: dict[str, Any] = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits or len(n.input) < 2:
            continue
        name = n.input[0].removesuffix(OUTPUT_SUFFIX)
        if name in table or n.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64).ravel()
        zero = (numpy_helper.to_array(inits[n.input[2]]) if len(n.input) > 2 and n.input[2] in inits
                else np.zeros(1, np.int8))
        qmin, qmax = (0, 255) if zero.dtype == np.uint8 else (-128, 127)
        zp = zero.astype(np.int64).ravel()
        entry = {"type": "uint8" if zero.dtype == np.uint8 else "int8",
                 "scale": float(scale[0]), "zero_point": int(zp[0]),
                 "range": [float(scale[0] * (qmin - zp[0])), float(scale[0] * (qmax - zp[0]))]}
        if ranges is not None and name in ranges.ranges:
            entry.update(ranges.ranges[name].to_json())
        table[name] = entry
    return table


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs "consider pre-processing" warnings on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
