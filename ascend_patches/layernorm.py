"""ascend-layernorm: give LayerNorm the form the selected CANN version handles best.

CANN 6 parses ONNX opsets up to 13, which have no LayerNormalization: the op is decomposed
into the sequence PyTorch's opset-11 export produces (ReduceMean, Sub, Pow, ReduceMean, Add,
Sqrt, Div, Mul, Add), the pattern ATC's LayerNorm fusion matches. CANN 7/8 parse
LayerNormalization (opset 17/18) but list it for float16 inputs: it is kept (or fused from
the decomposed form) for fp16 builds and decomposed for fp32 builds. The choice per CANN
version and precision is data: `layernorm_form` in vlc/ascend_patches/cann.toml.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlc.ascend_patches.cann import cann_info
from vlc.ascend_patches.core import PatchContext, PatchRecord, patch
from vlc.ascend_patches.graph import Graph, attr, infer_shapes, node, opset, standard_nodes, value_types


def wanted_form(ctx: PatchContext) -> str:
    return cann_info(ctx.cann).layernorm_form(ctx.precision)


def _reduce_mean(g: Graph, data: str, axes: list[int], out: str, name: str) -> Any:
    if opset(g.model) >= 18:
        return node("ReduceMean", [data, g.add_constant(f"{name}_axes", np.array(axes, dtype=np.int64))],
                    [out], name=name, keepdims=1)
    return node("ReduceMean", [data], [out], name=name, axes=axes, keepdims=1)


def decompose_layernorm(model: Any, record: PatchRecord) -> Any:
    targets = standard_nodes(model, "LayerNormalization")
    if not targets:
        return model
    types = value_types(infer_shapes(model))
    g = Graph(model)
    consumers = g.consumers()
    for n in targets:
        base = n.name or n.output[0]
        if any(o and (o in consumers or o in g.graph_outputs()) for o in n.output[1:]):
            record.notes.append(f"skipped {base}: its Mean/InvStdDev outputs are used")
            continue
        x = n.input[0]
        axis = int(attr(n, "axis", -1))
        shape = types[x][1] if x in types else None
        rank = len(shape) if shape is not None else None
        if axis >= 0:
            if rank is None:
                record.notes.append(f"skipped {base}: positive axis with unknown rank")
                continue
            axis -= rank
        axes = list(range(axis, 0))
        eps = float(attr(n, "epsilon", 1e-5))
        elem = types.get(x, (1, None))[0]
        from onnx import helper

        dtype = helper.tensor_dtype_to_np_dtype(elem)
        t = {k: g.fresh(f"{base}_{k}") for k in ("mean", "d", "sq", "var", "vareps", "std", "norm", "scaled")}
        nodes = [
            _reduce_mean(g, x, axes, t["mean"], f"{base}_mean"),
            node("Sub", [x, t["mean"]], [t["d"]], name=f"{base}_sub"),
            node("Pow", [t["d"], g.add_constant(f"{base}_two", np.array(2.0, dtype=dtype))], [t["sq"]],
                 name=f"{base}_pow"),
            _reduce_mean(g, t["sq"], axes, t["var"], f"{base}_var"),
            node("Add", [t["var"], g.add_constant(f"{base}_eps", np.array(eps, dtype=dtype))], [t["vareps"]],
                 name=f"{base}_add_eps"),
            node("Sqrt", [t["vareps"]], [t["std"]], name=f"{base}_sqrt"),
            node("Div", [t["d"], t["std"]], [t["norm"]], name=f"{base}_div"),
        ]
        scale = n.input[1]
        bias = n.input[2] if len(n.input) > 2 and n.input[2] else None
        out = n.output[0]
        nodes.append(node("Mul", [t["norm"], scale], [t["scaled"] if bias else out], name=f"{base}_mul"))
        if bias:
            nodes.append(node("Add", [t["scaled"], bias], [out], name=f"{base}_add"))
        g.replace_node(n, nodes)
        record.changed += 1
    g.remove_unused()
    return model


def fuse_layernorm(model: Any, record: PatchRecord) -> Any:
    """Decomposed LayerNorm -> LayerNormalization (opset >= 17 only), with onnxscript's rule."""
    if opset(model) < 17:
        record.notes.append("kept decomposed: LayerNormalization needs opset 17")
        return model
    import onnx_ir as ir

    try:
        from onnxscript.rewriter.rules.fusion import _layer_norm
    except ImportError:
        record.notes.append("kept decomposed: this onnxscript has no LayerNorm fusion rule")
        return model
    ir_model = ir.from_proto(model)
    count = _layer_norm.fuse_layer_normalization(ir_model)
    record.changed += int(count or 0)
    return ir.to_proto(ir_model)


@patch("ascend-layernorm", "LayerNorm in the form the CANN version handles best: decomposed "
       "(ATC's fusion pattern) for CANN 6 and fp32 builds, LayerNormalization for CANN 7/8 fp16")
def layernorm_form(model: Any, ctx: PatchContext, record: PatchRecord) -> Any:
    form = wanted_form(ctx)
    record.notes.append(f"form for CANN {ctx.cann} {ctx.precision}: {form}")
    if form == "decomposed":
        return decompose_layernorm(model, record)
    return fuse_layernorm(model, record)
