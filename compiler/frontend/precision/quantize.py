"""int8 explicit quantization: Q/DQ nodes (QDQ format) from calibration data.

Built on ONNX Runtime's static quantization (onnxruntime.quantization.quantize_static), set up
the way TensorRT consumes Q/DQ graphs: signed int8, symmetric (zero point 0) activations and
weights, per-channel weight scales, weights stored as int8 initializers behind a
DequantizeLinear, biases left in float, and only the compute-heavy ops (Conv, Gemm, MatMul)
quantized so that TensorRT fuses the rest around them.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import onnx

from vlc.errors import InputError
from vlc.frontend.precision.calibration import CalibrationData

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_QUANT_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def quantize_int8(source: Path, out_path: Path, calibration: CalibrationData, *, method: str = "minmax",
                  percentile: float = 99.999, per_channel: bool = True,
                  op_types: tuple[str, ...] = DEFAULT_QUANT_OPS,
                  nodes_to_exclude: list[str] | None = None) -> dict[str, int]:
    """Write a QDQ graph to `out_path`; return counts of Q/DQ nodes and quantized ops."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise InputError(f"unknown calibration method '{method}'", fix=f"use one of: {', '.join(METHODS)}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(calibration.feeds)

        def get_next(self):  # noqa: ANN202 - ORT's interface
            return next(self._feeds, None)

    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "AddQDQPairToWeight": False, "DedicatedQDQPair": False}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
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
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=nodes_to_exclude or [], calibrate_method=methods[method],
                        use_external_data_format=large, extra_options=extra)
    quantized = onnx.load(str(out_path), load_external_data=False)
    ops = Counter(n.op_type for n in quantized.graph.node)
    dq_outputs = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized_nodes = sum(1 for n in quantized.graph.node
                          if n.op_type in op_types and any(i in dq_outputs for i in n.input))
    return {"quantize_linear": ops["QuantizeLinear"], "dequantize_linear": ops["DequantizeLinear"],
            "quantized_nodes": quantized_nodes,
            "candidates": sum(1 for n in quantized.graph.node if n.op_type in op_types)}



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
