"""Numerical check of a converted graph against its fp32 source in ONNX Runtime (CPU).

int8 (QDQ) graphs run as they are. fp16 and bf16 graphs are checked through an emulation:
every low-precision tensor becomes fp32 rounded to its type (Cast to fp16/bf16 and back) right
where it is produced, and every op computes in fp32. ONNX Runtime's CPU provider has no bf16
kernels and few fp16 ones; for an fp16 op without a kernel it runs the fp32 kernel and drops
the graph's own Cast to fp16 in front of it, so a tensor past +-65504 that a GPU would turn
into inf stays finite when the fp16 graph itself runs on the CPU. The emulation keeps both
the rounding and the range of every stored tensor; fp16 accumulation inside a GPU kernel is
not part of this number (the artifact's own check covers that).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vlc.measure import onnx_cpu_outputs

BF16 = TensorProto.BFLOAT16
FLOAT = TensorProto.FLOAT

EMULATION_NOTE = ("every {precision} tensor is rounded to {precision} where produced (and so kept in its "
                  "range) and computed in fp32: ONNX Runtime's CPU provider has no bf16 and few fp16 "
                  "kernels, and runs fp16 ops without one in fp32 after dropping the Cast before them")


def has_qdq(model: str | Path | onnx.ModelProto) -> bool:
    """Whether the graph holds QuantizeLinear/DequantizeLinear nodes (an explicitly quantized graph)."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def check_options(model: str | Path | onnx.ModelProto):
    """ONNX Runtime session options for checking `model`'s numerics on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Numerics only: ONNX Runtime 1.31's CPU layout optimizations (level "all") crash on some fp16
    # graphs whose LayerNorm/Softmax stay in fp16; "extended" runs the same arithmetic.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if has_qdq(model):
        # A Q/DQ graph is checked by its own definition (dequantize, compute in fp32, quantize),
        # which is what TensorRT's int8 kernels reproduce. With optimizations on, ONNX Runtime
        # fuses Q/DQ into its CPU int8 kernels, whose u8s8 AVX2 path (CPUs without VNNI, e.g.
        # AMD EPYC) saturates 16-bit intermediate sums: the same graph then checks at cosine
        # 0.97 on one machine and 0.9999 on another.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def run_onnx(model: str | Path | onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a graph on ONNX Runtime's CPU provider (vlc.measure's CPU runner); outputs by name."""
    return onnx_cpu_outputs(model, feeds, options=check_options(model))


def emulate_bf16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An fp32 graph that rounds every bf16 tensor of `model` to bf16 where it is produced."""
    return emulate_low_precision(model, BF16)


def emulate_low_precision(model: onnx.ModelProto, low: int, low_tensors: set[str] | None = None,
                          *, in_place: bool = False) -> onnx.ModelProto:
    """An fp32 graph that rounds every `low` (FLOAT16 or BFLOAT16) tensor of `model` to `low`
    where it is produced: the graph's arithmetic in fp32, its stored tensors as `low` holds them.
    `low_tensors` names those tensors (as lowp's stats have them; default: from shape inference);
    `in_place` edits `model` itself instead of a copy."""
    if low_tensors is None:
        inferred = onnx.shape_inference.infer_shapes(model)
        low_tensors = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
                       if vi.type.tensor_type.elem_type == low}
    types = {name: low for name in low_tensors}
    out = model if in_place else onnx.ModelProto.FromString(model.SerializeToString())
    g = out.graph
    for i, init in enumerate(g.initializer):
        if init.data_type == low:
            g.initializer[i].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float32), init.name))
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == low:
            vi.type.tensor_type.elem_type = FLOAT
    nodes = []
    for node in g.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == low:
                attr.i = FLOAT  # rounding is added below like for any low-precision output
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == low:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32)))
        rounds = []
        for j, name in enumerate(node.output):
            if types.get(name) == low:
                raw = f"{name}__lowp_raw"
                node.output[j] = raw
                rounds += [helper.make_node("Cast", [raw], [f"{name}__lowp_rounded"], to=low),
                           helper.make_node("Cast", [f"{name}__lowp_rounded"], [name], to=FLOAT)]
        nodes.append(node)
        nodes.extend(rounds)
    del g.node[:]
    g.node.extend(nodes)
    return out
