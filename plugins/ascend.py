"""Ascend (ATC) implementations: the custom nodes rewritten into the ONNX forms ATC maps to its
native operators. Nothing here has met a real ATC or NPU; sources are named per form.

ATC's ONNX parser maps standard ONNX operators one by one onto Ascend IR operators (the
per-operator parser plugins of the CANN operator packages), then its graph fusion passes merge
known subgraphs. So "mapping to a native operator" means emitting the ONNX form that either has
a direct parser or that a fusion pass recognises:

- LayerNorm -> ONNX ``LayerNormalization`` (opset 17/18), parsed directly into Ascend
  ``LayerNorm`` (CONFIRMED: hicann/ops-nn registers ``ai.onnx::17::LayerNormalization`` and
  ``ai.onnx::18::LayerNormalization`` and builds a LayerNorm graph from it). Below opset 17 the
  decomposed ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add form is emitted, the shape
  ops-nn's LayerNorm ONNX fusion pass targets (the pass exists; its exact pattern is UNCONFIRMED).
- GELU, tanh form -> the exact arrangement Pow -> Mul -> Add(x) -> Mul -> Tanh -> Add -> Mul ->
  Mul(x) that ATC's ``GeluFusionPass`` fuses into Ascend ``Gelu`` (CONFIRMED in the CANN
  operator sources, gelu_fusion_pass.cc).
- GELU, erf form -> Div/Erf/Add/Mul/Mul; each has an ONNX parser (``Erf`` -> Erf confirmed).
  Whether ATC fuses this form into ``Gelu`` is UNCONFIRMED (the reference ViLBERT guide lists
  Gelu in --optypelist_for_implmode for an opset-11 export, which suggests it does).
- GELU -> ``FastGelu`` on request (plugin ``gelu`` named explicitly): an ``NPUFastGelu`` node,
  which ops-nn registers for ``npu::1`` and ``ai.onnx::11..18`` (CONFIRMED). FastGelu computes
  x * sigmoid(1.702 x), which is not GELU: max abs difference 0.02, so it is off by default.
- SiLU -> Mul(x, Sigmoid(x)); Sigmoid and Mul have parsers (CONFIRMED). ONNX has no Swish
  operator below opset 24 and no Sigmoid+Mul -> Swish fusion pass was found in the sources read,
  so whether ATC runs this as one Swish kernel is UNCONFIRMED.
"""

from __future__ import annotations

from onnxscript.rewriter import pattern

from vlc.plugins.base import DOMAIN
from vlc.plugins.patterns import (
    gelu_expand_rules,
    layernorm_decomposed_rules,
    layernorm_expand_rules,
    silu_expand_rules,
    vlc_gelu_pattern,
)

ASCEND_TARGETS = ("ascend310", "ascend310p")
NPU_DOMAIN = "npu"

# SiLU: the reference form Mul(x, Sigmoid(x)) is already what ATC parses natively.
silu_native_rules = silu_expand_rules
# GELU: the reference form; its tanh arrangement is exactly what GeluFusionPass matches.
gelu_native_rules = gelu_expand_rules


def gelu_fastgelu_rules(opset: int) -> list[pattern.RewriteRule]:
    def rewrite(op, x, **_):
        return op.NPUFastGelu(x, _domain=NPU_DOMAIN)

    return [pattern.RewriteRule(vlc_gelu_pattern, rewrite, name="ascend-fastgelu")]


def layernorm_native_rules(opset: int) -> list[pattern.RewriteRule]:
    if opset in (17, 18):
        return layernorm_expand_rules(opset)  # LayerNormalization
    return layernorm_decomposed_rules(opset)


NATIVE_FORMS = {
    "silu": "Mul(x, Sigmoid(x)) (Sigmoid + Mul; Swish fusion unconfirmed)",
    "gelu": "tanh: GeluFusionPass arrangement -> Gelu; erf: Div/Erf/Add/Mul",
    "layernorm": "LayerNormalization (opset 17/18) -> LayerNorm; decomposed below 17",
}

__all__ = ["ASCEND_TARGETS", "DOMAIN", "NATIVE_FORMS", "gelu_fastgelu_rules", "gelu_native_rules",
           "layernorm_native_rules", "silu_native_rules"]
