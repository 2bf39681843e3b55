"""Graph rewrites fitted to ONNX Runtime's CUDA kernels (the onnxruntime target's pass set only).

Each rule replaces a form that ONNX Runtime's CUDA provider runs slowly with one it runs well;
measured on an H100 in benchmarks/gpu (kernel_profile.py), CLIP ViT-B/32 at batch 1024:

- patch-matmul: a patch-embedding Conv (kernel == stride, no padding) on a 3-channel fp16 image
  gets cuDNN's non-tensor-core implicit GEMM (3 channels are not a multiple of 8): 9.4 ms of
  41 ms. The same product as patchify (Reshape/Transpose) + MatMul is one cuBLAS GEMM.
- patch-tokens: the NHWC -> NCHW -> (N, C, L) -> (N, L, C) round trip that follows a patch
  embedding becomes a single Reshape (two full transposes fewer).
- conv-bias-add (MobileViT-S at batch 32): a Conv's own bias is added by cuDNN's generic tensor
  kernel, 32 calls 1.6 ms of 7.4 ms; as a separate broadcast Add, ONNX Runtime's elementwise
  kernel takes 0.8 ms for all of them (sessions of such graphs turn off ONNX Runtime's
  ConvAddFusion, which would fold the Add back into the Conv).
- qkv-attention: MatMul -> Split -> MultiHeadAttention (onnxscript's fusion of a packed QKV
  projection) becomes one com.microsoft Attention node, which reads the packed projection
  itself instead of copying it three ways first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from vlc.frontend.rule_utils import attr_value, const_ints


def _static_dims(value: ir.Value, rank: int) -> list[int] | None:
    shape = value.shape
    if shape is None or len(shape) != rank:
        return None
    dims = [d if isinstance(d, int) else None for d in shape]
    if any(d is None for d in dims[1:]):
        return None
    return [d if d is not None else -1 for d in dims]  # the batch may be symbolic: -1


def _matched_dims(value: ir.Value, rank: int) -> list[int]:
    """_static_dims of a value its rule's check() has already matched on them."""
    dims = _static_dims(value, rank)
    if dims is None:
        raise AssertionError(f"{value.name}: rewrite of a value without the static dims check() matched")
    return dims


def _const(op: Any, array: np.ndarray, name: str) -> ir.Value:
    return op.initializer(ir.tensor(np.ascontiguousarray(array)), name)


def _shaped(value: ir.Value, like: ir.Value, dims: list[Any]) -> ir.Value:
    value.shape, value.type = ir.Shape(dims), like.type
    return value


class PatchConvToMatMul(pattern.RewriteRuleClassBase):
    """Conv(x, w) with kernel == stride (> 1), no padding -> patchify + MatMul + back to NCHW."""

    def pattern(self, op, x, w):
        return op.Conv(x, w, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["conv"])

    def check(self, context, x, w, conv, **_unused):  # type: ignore[override]
        result = pattern.MatchResult()
        node = conv.producer()
        weight = w.const_value
        if weight is None or len(weight.shape) != 4:
            return result.fail("weight is not a constant 4-D tensor")
        _, channels, kh, kw = weight.shape
        dims = _static_dims(x, 4)
        if dims is None or dims[1] != channels:
            return result.fail("input is not NCHW with static C, H, W")
        if list(attr_value(node, "kernel_shape", [kh, kw])) != [kh, kw] or (kh, kw) == (1, 1):
            return result.fail("not a patch kernel")
        if list(attr_value(node, "strides", [1, 1])) != [kh, kw]:
            return result.fail("stride differs from the kernel")
        padded = any(attr_value(node, "pads", [0, 0, 0, 0]))
        if padded or attr_value(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return result.fail("padded")
        if any(d != 1 for d in attr_value(node, "dilations", [1, 1])) or attr_value(node, "group", 1) != 1:
            return result.fail("dilated or grouped")
        if dims[2] % kh or dims[3] % kw:
            return result.fail("image size is not a multiple of the patch")
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None and bias.const_value is None:
            return result.fail("bias is not constant")
        return result

    def rewrite(self, op, x, w, conv, **_unused):
        node = conv.producer()
        weight = w.const_value.numpy()
        out_channels, channels, kh, kw = weight.shape
        _, _, height, width = _matched_dims(x, 4)
        gh, gw = height // kh, width // kw
        name = conv.name  # value names are unique in a graph; node names need not be
        blocks = op.Reshape(x, _const(op, np.array([-1, channels, gh, kh, gw, kw], np.int64),
                                      f"{name}_blocks"))
        patches = op.Transpose(blocks, perm=[0, 2, 4, 1, 3, 5])  # (N, gh, gw, C, kh, kw)
        rows = op.Reshape(patches, _const(op, np.array([-1, gh * gw, channels * kh * kw], np.int64),
                                          f"{name}_rows"))
        matrix = weight.reshape(out_channels, channels * kh * kw).T  # (C*kh*kw, O)
        tokens = op.MatMul(rows, _const(op, matrix, f"{name}_matrix"))
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None:
            tokens = op.Add(tokens, bias)
        batch = x.shape[0]
        nhwc = _shaped(op.Reshape(tokens, _const(op, np.array([-1, gh, gw, out_channels], np.int64),
                                                 f"{name}_nhwc")), conv, [batch, gh, gw, out_channels])
        return op.Transpose(nhwc, perm=[0, 3, 1, 2])


class PatchTokens(pattern.RewriteRuleClassBase):
    """Transpose(NHWC -> NCHW) -> Reshape(N, C, H*W) -> Transpose(0, 2, 1) -> Reshape(N, H*W, C)."""

    def pattern(self, op, nhwc, flat_shape):
        nchw = op.Transpose(nhwc, perm=[0, 3, 1, 2])
        flat = op.Reshape(nchw, flat_shape, _allow_other_attributes=True, _outputs=["flat"])
        return op.Transpose(flat, perm=[0, 2, 1])

    def check(self, context, nhwc, flat_shape, flat, **_unused):  # type: ignore[override]
        result = pattern.MatchResult()
        dims = _static_dims(nhwc, 4)
        target = const_ints(flat_shape)
        if dims is None or target is None or len(target) != 3:
            return result.fail("shapes unknown")
        _, h, w, c = dims
        if target[1:] != [c, h * w] or target[0] not in (-1, dims[0]):
            return result.fail("not the (N, C, H*W) flattening")
        return result

    def rewrite(self, op, nhwc, flat_shape, flat, **_unused):
        _, h, w, c = _matched_dims(nhwc, 4)
        return op.Reshape(nhwc, _const(op, np.array([-1, h * w, c], np.int64), f"{flat.name}_tokens"))


class ConvBiasToAdd(pattern.RewriteRuleClassBase):
    """Conv(x, w, b) -> Add(Conv(x, w), b as (1, C, 1, ...))."""

    def pattern(self, op, x, w, b):
        return op.Conv(x, w, b, _allow_other_attributes=True, _outputs=["conv"])

    def check(self, context, x, w, b, conv, **_unused):  # type: ignore[override]
        result = pattern.MatchResult()
        if b.const_value is None or len(b.const_value.shape) != 1:
            return result.fail("bias is not a constant vector")
        if w.shape is None or len(w.shape) < 3:
            return result.fail("weight rank unknown")
        return result

    def rewrite(self, op, x, w, b, conv, **_unused):
        node = conv.producer()
        attributes = {name: attr.value for name, attr in node.attributes.items()}
        spatial = len(w.shape) - 2
        bias = b.const_value.numpy().reshape((1, -1) + (1,) * spatial)
        return op.Add(op.Conv(x, w, **attributes), _const(op, bias, f"{conv.name}_channel_bias"))


class QkvAttention(pattern.RewriteRuleClassBase):
    """MatMul(x, W_qkv) -> Split in three -> MultiHeadAttention(q, k, v, bias) -> Attention."""

    def pattern(self, op, x, weight, sizes, bias):
        packed = op.MatMul(x, weight, _outputs=["packed"])
        q, k, v = op.Split(packed, sizes, _allow_other_attributes=True, _outputs=3)
        return op.MultiHeadAttention(q, k, v, bias, _domain="com.microsoft",
                                     _allow_other_attributes=True, _outputs=["attention"])

    def check(self, context, x, weight, sizes, bias, packed, attention, **_unused):  # type: ignore[override]
        result = pattern.MatchResult()
        split = next(iter(packed.uses())).node
        mha = attention.producer()
        if len(packed.uses()) != 1 or any(len(o.uses()) != 1 for o in split.outputs):
            return result.fail("the projection or its parts are used elsewhere")
        parts = const_ints(sizes)
        w = weight.const_value
        thirds = parts is not None and len(parts) == 3 and len(set(parts)) == 1
        if w is None or len(w.shape) != 2 or not thirds or sum(parts or []) != w.shape[1]:
            return result.fail("not one constant projection split in three equal parts")
        if attr_value(split, "axis", 0) not in (-1, 2) or bias.const_value is None:
            return result.fail("split on another axis, or bias not constant")
        if x.shape is None or len(x.shape) != 3:
            return result.fail("input is not (B, S, D)")
        allowed = {"num_heads", "scale", "mask_filter_value"}
        if set(mha.attributes) - allowed or len(mha.outputs) != 1 or attr_value(mha, "unidirectional", 0):
            return result.fail("attention with outputs or attributes the Attention op does not take")
        return result

    def rewrite(self, op, x, weight, sizes, bias, packed, attention, **_unused):
        mha = attention.producer()
        attributes = {name: mha.attributes[name].value for name in ("num_heads", "scale", "mask_filter_value")
                      if name in mha.attributes}
        return op.Attention(x, weight, bias, _domain="com.microsoft", **attributes)


RULES: dict[str, tuple[pattern.RewriteRule, ...]] = {
    "patch-matmul": (PatchConvToMatMul.rule(), PatchTokens.rule()),
    "conv-bias-add": (ConvBiasToAdd.rule(),),
    "qkv-attention": (QkvAttention.rule(),),
}
