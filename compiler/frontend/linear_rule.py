"""Reshape -> Gemm -> Reshape, the exporter's form of a Linear on an N-D input, as MatMul + Add.

The dynamo exporter flattens the input to 2-D for Gemm and reshapes the result afterwards (back
to the input's rank, or straight on to attention heads). MatMul + Add on the original rank is the
form that attention, bias and LayerNorm fusions match, and that TensorRT and ATC fuse into one
matrix product with a bias. onnxscript's own rule for this (gemm_to_matmul_add_rule) needs static
shapes, so it never fires on a dynamic batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.pattern import MatchResult

from vlc.frontend.rule_utils import attr_value, const_ints


def _weight_kn(node: ir.Node, weight: ir.Value) -> tuple[int, int]:
    assert weight.const_value is not None  # check() only matches constant weights
    rows, cols = weight.const_value.shape.numpy()
    return (cols, rows) if attr_value(node, "transB", 0) else (rows, cols)


def _row_dims(out: list[int], n: int) -> list[int] | None:
    """The leading dims of `out` that index the Gemm's rows: those before a static tail whose
    product is the output width `n` (the tail may split it, e.g. into heads). None if there is none."""
    for j in range(len(out) - 1, 0, -1):
        tail = out[j:]
        if any(d <= 0 for d in tail):
            return None
        if math.prod(tail) == n:
            return out[:j]
        if math.prod(tail) > n:
            return None
    return None


def _flattening(flat: ir.Value) -> tuple[ir.Value, list[int] | None] | None:
    """(input, target shape) of the Reshape that produced `flat`, if one did. Not part of the
    pattern: Q, K and V projections share one flattening Reshape, which must stay for the others."""
    producer = flat.producer()
    if producer is None or producer.op_type != "Reshape" or producer.domain not in ("", "ai.onnx"):
        return None
    data = producer.inputs[0]
    return None if data is None else (data, const_ints(producer.inputs[1]))


class FlattenedLinear(pattern.RewriteRuleClassBase):
    def pattern(self, op, flat, weight, out_shape):
        gemm = op.Gemm(flat, weight, _allow_other_inputs=True, _allow_other_attributes=True,
                       _outputs=["gemm"])
        return op.Reshape(gemm, out_shape, _allow_other_attributes=True, _outputs=["restored"])

    def check(self, context, flat, weight, out_shape, gemm, **_) -> MatchResult:  # type: ignore[override]
        result = MatchResult()
        node = gemm.producer()
        flattening = _flattening(flat)
        if flattening is None:
            return result.fail("the Gemm's input is not a Reshape")
        if attr_value(node, "transA", 0) != 0 or attr_value(node, "alpha", 1.0) != 1.0:
            return result.fail("Gemm with transA or alpha")
        if weight.const_value is None or len(weight.const_value.shape) != 2:
            return result.fail("weight is not a constant matrix")
        k, n = _weight_kn(node, weight)
        flat_dims, out = flattening[1], const_ints(out_shape)
        if flat_dims is None or len(flat_dims) != 2 or flat_dims[1] != k:
            return result.fail("the flattening Reshape does not keep the contraction dim last")
        if out is None or 0 in out or _row_dims(out, n) is None:
            return result.fail("the restoring Reshape does not keep rows whole (or copies dims)")
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None:
            if attr_value(node, "beta", 1.0) != 1.0 or bias.const_value is None:
                return result.fail("bias is scaled or not constant")
            if int(np.prod(bias.const_value.shape)) not in (1, n):
                return result.fail("bias is not one row broadcast over the rows")
        return result

    def rewrite(self, op, flat, weight, out_shape, gemm, restored, **_):
        node = gemm.producer()
        x = _flattening(flat)[0]  # type: ignore[index]
        k, n = _weight_kn(node, weight)
        out = const_ints(out_shape)
        lead = _row_dims(out, n)  # type: ignore[arg-type]
        assert out is not None and lead is not None
        if attr_value(node, "transB", 0):
            matrix = np.ascontiguousarray(weight.const_value.numpy().T)
            weight = op.initializer(ir.tensor(matrix), f"{gemm.name}_weight_kn")
        unflat = x if _already_shaped(x, lead, k) else op.Reshape(
            x, op.initializer(ir.tensor(np.array(lead + [k], dtype=np.int64)), f"{gemm.name}_in_shape"))
        product = op.MatMul(unflat, weight)
        # later fusions match on shapes: give the new values the ones they have
        rows = _known_rows(restored, len(lead))
        if rows is not None:
            if unflat is not x:
                unflat.shape, unflat.type = ir.Shape([*rows, k]), x.type
            product.shape, product.type = ir.Shape([*rows, n]), restored.type
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None:
            row = bias.const_value.numpy().reshape(-1)
            if row.size == 1:
                row = np.repeat(row, n)
            product = op.Add(product, op.initializer(ir.tensor(row), f"{gemm.name}_bias"))
            if rows is not None:
                product.shape, product.type = ir.Shape([*rows, n]), restored.type
        if len(lead) == len(out) - 1:
            return product
        return op.Reshape(product, out_shape)  # the split the exporter wrote (e.g. into heads)


def _known_rows(restored: ir.Value, count: int) -> list[Any] | None:
    shape = restored.shape
    return None if shape is None or len(shape) < count else list(shape[:count])


def _already_shaped(x: ir.Value, lead: list[int], k: int) -> bool:
    """x already has shape lead + [k] (static entries equal; the one -1 is then implied)."""
    shape = x.shape
    if shape is None or len(shape) != len(lead) + 1 or shape[-1] != k:
        return False
    return all(want == -1 or dim == want for dim, want in zip(shape, lead))


flattened_linear_rule = FlattenedLinear.rule()
