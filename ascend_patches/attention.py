"""ascend-attention: arrange attention for ATC's fusions where it is exact or within an ulp.

- `scores / c` with a constant scalar c becomes `scores * (1/c)` (an onnxscript RewriteRule):
  ATC's attention fusion patterns expect the scale as a Mul; the two differ by at most one
  rounding of the product.
- An additive mask broadcast over the query axis ([B,1,1,S] added to [B,H,S,S] scores that
  feed a Softmax) is Expanded to [B,1,S,S], the mask shape ATC's fused attention kernels
  take; values are unchanged. Needs static shapes (freeze shapes first).
Not done, because it is not exact or changes the model's interface: padding token axes to
multiples of 16, and rewriting 4-D MatMuls as 2-D ones with Reshapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlc.ascend_patches.core import PatchContext, PatchRecord, patch
from vlc.ascend_patches.graph import Graph, infer_shapes, node, static_shape, value_types


def _scale_rule() -> Any:
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    def target(op, x, c):
        return op.Div(x, c)

    def check(context, x, c, **_):
        tensor = ir.convenience.get_const_tensor(c)
        if tensor is None:
            return False
        value = tensor.numpy()
        return value.size == 1 and value.dtype.kind == "f" and float(value.reshape(-1)[0]) != 0.0

    def replacement(op, x, c):
        tensor = ir.convenience.get_const_tensor(c)
        assert tensor is not None  # the condition matched only a constant divisor
        value = tensor.numpy()
        reciprocal = (np.ones_like(value) / value).astype(value.dtype)
        return op.Mul(x, op.Constant(value=ir.tensor(reciprocal)))

    return pattern.RewriteRule(target, replacement, check, name="DivByConstToMul")


def div_to_mul(model: Any, record: PatchRecord) -> Any:
    from onnxscript import rewriter

    before = sum(1 for n in model.graph.node if n.op_type == "Div")
    model = rewriter.rewrite(model, pattern_rewrite_rules=[_scale_rule()])
    after = sum(1 for n in model.graph.node if n.op_type == "Div")
    if before != after:
        record.changed += before - after
        record.notes.append(f"{before - after} Div by a constant -> Mul by its reciprocal")
    return model


def expand_masks(model: Any, record: PatchRecord) -> Any:
    types = value_types(infer_shapes(model))
    g = Graph(model)
    consumers = g.consumers()
    for n in list(model.graph.node):
        if n.op_type != "Add" or len(n.input) != 2:
            continue
        if not any(c.op_type == "Softmax" for c, _ in consumers.get(n.output[0], [])):
            continue
        out_shape = static_shape(types, n.output[0])
        if out_shape is None or len(out_shape) != 4:
            continue
        for which in (0, 1):
            mask = n.input[which]
            mask_shape = static_shape(types, mask)
            if mask_shape is None or len(mask_shape) != 4 or mask_shape[1] != 1:
                continue
            wanted = (out_shape[0], 1, out_shape[2], out_shape[3])
            if mask_shape == wanted or mask_shape[2] != 1:
                continue
            expanded = g.fresh(f"{mask}_expanded")
            shape = g.add_constant(f"{mask}_expand_shape", np.array(wanted, dtype=np.int64))
            g.insert_before(n, [node("Expand", [mask, shape], [expanded], name=f"{n.name or n.output[0]}_mask_expand")])
            n.input[which] = expanded
            record.changed += 1
            record.notes.append(f"mask {mask} {list(mask_shape)} -> {list(wanted)}")
            break
    return model


@patch("ascend-attention", "attention arranged for ATC's fusions: scale as Mul(1/c) instead of "
       "Div(c), additive masks expanded to [B,1,S,S] (static shapes)")
def arrange_attention(model: Any, ctx: PatchContext, record: PatchRecord) -> Any:
    model = div_to_mul(model, record)
    return expand_masks(model, record)
