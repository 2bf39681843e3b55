"""ascend-fp16-clamp: clamp float constants into the fp16 range (+-65504).

Attention masks are often built as `(1 - mask) * -3.4e38` or with `finfo(float32).min`;
ATC runs such graphs in fp16, where those constants become -inf and the softmax gives NaN.
Clamping to -65504 keeps the result in fp32 (exp(-65504 + x) is 0 either way) and makes it
finite in fp16. Infinite constants are clamped too; NaN constants are left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlc.ascend_patches.core import PatchContext, PatchRecord, patch

FP16_MAX = 65504.0
FLOAT_TYPES = {1, 11, 10, 16}  # FLOAT, DOUBLE, FLOAT16, BFLOAT16


def _clamp(array: np.ndarray) -> np.ndarray | None:
    if array.dtype.kind != "f" or array.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        over = np.abs(array) > FP16_MAX
    if not over.any():
        return None
    return np.clip(array, -FP16_MAX, FP16_MAX).astype(array.dtype)


def out_of_range(array: np.ndarray) -> bool:
    return _clamp(array) is not None


@patch("ascend-fp16-clamp", "clamp float constants (initializers, Constant and ConstantOfShape "
       "values) into +-65504 so fp16 gives no -inf/NaN (attention masks of -3.4e38)")
def clamp_constants(model: Any, ctx: PatchContext, record: PatchRecord) -> None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.data_type not in FLOAT_TYPES:
            continue
        clamped = _clamp(numpy_helper.to_array(init))
        if clamped is not None:
            init.CopyFrom(numpy_helper.from_array(clamped, init.name))
            record.changed += 1
            record.notes.append(f"initializer {init.name}")
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("Constant", "ConstantOfShape"):
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.HasField("t"):
                clamped = _clamp(numpy_helper.to_array(attr.t))
                if clamped is not None:
                    attr.t.CopyFrom(numpy_helper.from_array(clamped, attr.t.name))
                    record.changed += 1
                    record.notes.append(f"{node.op_type} {node.name or node.output[0]}")
            elif attr.name in ("value_float", "value_floats"):
                values = np.array([attr.f] if attr.name == "value_float" else list(attr.floats),
                                  dtype=np.float32)
                clamped = _clamp(values)
                if clamped is not None:
                    if attr.name == "value_float":
                        attr.f = float(clamped[0])
                    else:
                        del attr.floats[:]
                        attr.floats.extend(float(v) for v in clamped)
                    record.changed += 1
                    record.notes.append(f"{node.op_type} {node.name or node.output[0]}")
