"""ascend-gather-neg-index: Gather with a constant negative index -> Slice (+ Squeeze).

ATC's Gather does not wrap negative indices (the ViLBERT guide's `x[:, -1]`, the [CLS]/last
token picks). A scalar index i < 0 becomes Slice(start=i, end=i+1 or to the end) and a
Squeeze of the axis; a 1-D constant index with negatives becomes non-negative when the
axis size is known, else one Slice per element joined by Concat.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlc.ascend_patches.core import PatchContext, PatchRecord, patch
from vlc.ascend_patches.graph import Graph, attr, infer_shapes, node, opset, squeeze_node, static_shape, value_types

INT64_MAX = np.iinfo(np.int64).max


def negative_index_gathers(model: Any) -> list[Any]:
    g = Graph(model)
    found = []
    for n in model.graph.node:
        if n.op_type == "Gather" and n.domain in ("", "ai.onnx") and len(n.input) == 2:
            index = g.constant(n.input[1])
            if index is not None and index.size and (index < 0).any():
                found.append(n)
    return found


def _slice_nodes(g: Graph, data: str, start: int, axis: int, out: str, name: str) -> list[Any]:
    end = start + 1 if start != -1 else INT64_MAX
    if opset(g.model) >= 10:
        starts = g.add_constant(f"{name}_starts", np.array([start], dtype=np.int64))
        ends = g.add_constant(f"{name}_ends", np.array([end], dtype=np.int64))
        axes = g.add_constant(f"{name}_axes", np.array([axis], dtype=np.int64))
        return [node("Slice", [data, starts, ends, axes], [out], name=name)]
    return [node("Slice", [data], [out], name=name, starts=[start], ends=[end], axes=[axis])]


@patch("ascend-gather-neg-index", "Gather with a constant negative index -> Slice + Squeeze "
       "(ATC's Gather does not wrap negative indices)")
def gather_negative_index(model: Any, ctx: PatchContext, record: PatchRecord) -> Any:
    targets = negative_index_gathers(model)
    if not targets:
        return model
    types = value_types(infer_shapes(model))
    g = Graph(model)
    for n in targets:
        data, out = n.input[0], n.output[0]
        index = g.constant(n.input[1])
        assert index is not None
        shape = types[data][1] if data in types else None
        rank = len(shape) if shape is not None else None
        axis = int(attr(n, "axis", 0))
        if axis < 0:
            if rank is None:
                record.notes.append(f"skipped {n.name or out}: negative axis with unknown rank")
                continue
            axis += rank
        base = n.name or out
        if index.ndim == 0:
            sliced = g.fresh(f"{base}_slice")
            nodes = _slice_nodes(g, data, int(index), axis, sliced, f"{base}_slice")
            nodes += squeeze_node(g, sliced, [axis], out, f"{base}_squeeze")
        else:
            shape = static_shape(types, data)
            if shape is not None:
                positive = np.where(index < 0, index + shape[axis], index).astype(index.dtype)
                nodes = [node("Gather", [data, g.add_constant(f"{base}_index", positive)], [out],
                              name=base, axis=axis)]
            elif index.ndim == 1:
                parts = []
                nodes = []
                for k, i in enumerate(index.tolist()):
                    part = g.fresh(f"{base}_part{k}")
                    if i < 0:
                        nodes += _slice_nodes(g, data, int(i), axis, part, f"{base}_slice{k}")
                    else:
                        nodes.append(node("Gather", [data, g.add_constant(
                            f"{base}_i{k}", np.array([i], dtype=index.dtype))], [part],
                            name=f"{base}_gather{k}", axis=axis))
                    parts.append(part)
                nodes.append(node("Concat", parts, [out], name=f"{base}_concat", axis=axis))
            else:
                record.notes.append(f"skipped {base}: {index.ndim}-D index on a dynamic axis")
                continue
        g.replace_node(n, nodes)
        record.changed += 1
    g.remove_unused()
    return model
