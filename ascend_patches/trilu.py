"""ascend-trilu-mask: Trilu (causal masks) -> a constant, or Where with a constant mask.

ATC has no Trilu parser in the CANN versions vlc targets. When Trilu's input is constant the
whole result is folded into an initializer; when only its shape is static the node becomes
Where(mask, x, 0) with a constant boolean mask, which is exact (also for inf inputs, where a
multiply by 0 would give NaN). The diagonal offset k must be constant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlc.ascend_patches.core import PatchContext, PatchRecord, patch
from vlc.ascend_patches.graph import Graph, attr, infer_shapes, node, standard_nodes, static_shape, value_types


def trilu_mask(shape: tuple[int, ...], k: int, upper: bool) -> np.ndarray:
    """The [rows, cols] boolean mask Trilu keeps; Where broadcasts it over leading axes."""
    ones = np.ones(shape[-2:], dtype=bool)
    return np.triu(ones, k) if upper else np.tril(ones, k)


@patch("ascend-trilu-mask", "Trilu (causal masks) -> a folded constant, or Where with a constant "
       "mask when the input shape is static (ATC has no Trilu)")
def trilu_to_mask(model: Any, ctx: PatchContext, record: PatchRecord) -> Any:
    nodes = standard_nodes(model, "Trilu")
    if not nodes:
        return model
    types = value_types(infer_shapes(model))
    g = Graph(model)
    for n in nodes:
        base = n.name or n.output[0]
        k = 0
        if len(n.input) > 1 and n.input[1]:
            k_value = g.constant(n.input[1])
            if k_value is None:
                record.notes.append(f"skipped {base}: diagonal offset k is not constant")
                continue
            k = int(k_value.reshape(-1)[0])
        upper = bool(attr(n, "upper", 1))
        data = g.constant(n.input[0])
        if data is not None:
            folded = np.triu(data, k) if upper else np.tril(data, k)
            g.replace_node(n, [node("Identity", [g.add_constant(f"{base}_folded", folded)],
                                    [n.output[0]], name=base)])
        else:
            shape = static_shape(types, n.input[0])
            if shape is None:
                record.notes.append(f"skipped {base}: input shape not static (freeze shapes first)")
                continue
            elem = types[n.input[0]][0]
            from onnx import helper

            zero = np.zeros((), dtype=helper.tensor_dtype_to_np_dtype(elem))
            mask = g.add_constant(f"{base}_mask", trilu_mask(shape, k, upper))
            zero_name = g.add_constant(f"{base}_zero", zero)
            g.replace_node(n, [node("Where", [mask, n.input[0], zero_name], [n.output[0]], name=base)])
        record.changed += 1
    g.remove_unused()
    return model
