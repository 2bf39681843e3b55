"""Rewrite rules (onnxscript rewriter over onnx_ir) for the built-in plugins.

Fuse rules turn the forms PyTorch's exporters emit into one ``ai.vlc::<Op>`` node; expand rules
turn that node back into standard operators (the reference implementation that ONNX Runtime runs).
Each factory takes the opset of the default domain, because the standard forms differ by opset.
Rule sets are applied with ``commute=True``, so operand order of Add/Mul does not matter.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from vlc.plugins.base import DOMAIN

SQRT2 = math.sqrt(2.0)
SQRT1_2 = 1.0 / SQRT2
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_COEF = 0.044715
FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


# ---- helpers -----------------------------------------------------------------------------

def const_scalar(value: ir.Value | None) -> float | None:
    """The value of a one-element constant (initializer or Constant node), else None."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        return None
    array = tensor.numpy()
    return float(array.reshape(-1)[0]) if array.size == 1 else None


def _is_float(x: ir.Value) -> bool:
    return x.dtype is None or x.dtype in FLOAT_TYPES


def _np_dtype(x: ir.Value) -> Any:
    return x.dtype.numpy() if x.dtype is not None else np.float32


def typed_const(op: Any, value: float, like: ir.Value) -> ir.Value:
    """A scalar Constant with the element type of `like` (fp16 graphs stay fp16)."""
    return op.Constant(value=ir.tensor(np.array(value, dtype=_np_dtype(like))))


def _axes_const(op: Any) -> ir.Value:
    return op.Constant(value=ir.tensor(np.array([-1], dtype=np.int64)))


def _single_output_used(node: ir.Node) -> bool:
    return all(not out.uses() for out in node.outputs[1:])


# ---- SiLU ----------------------------------------------------------------------------------

def _silu_pattern(op, x):
    return op.Mul(x, op.Sigmoid(x))


def _silu_check(context, x, **_) -> bool:
    return _is_float(x)


def _silu_fuse(op, x, **_):
    return op.SiLU(x, _domain=DOMAIN)


def silu_fuse_rules(opset: int) -> list[pattern.RewriteRule]:
    return [pattern.RewriteRule(_silu_pattern, _silu_fuse, _silu_check, name="fuse-silu")]


def _vlc_silu(op, x):
    return op.SiLU(x, _domain=DOMAIN)


def silu_reference(op, x, **_):
    return op.Mul(x, op.Sigmoid(x))


def silu_expand_rules(opset: int) -> list[pattern.RewriteRule]:
    return [pattern.RewriteRule(_vlc_silu, silu_reference, name="expand-silu")]


# ---- GELU ----------------------------------------------------------------------------------
# erf form:  0.5 * x * (1 + erf(x / sqrt(2)))
# tanh form: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
# The exporters place the 0.5 differently; three output arrangements cover them:
#   dynamo:      Mul(x, Mul(0.5, core))      torchscript: Mul(Mul(x, core), 0.5)
#   by hand:     Mul(Mul(x, 0.5), core)

def _erf_core(op, x):
    scaled = pattern.OrValue([op.Div(x, SQRT2), op.Mul(x, SQRT1_2)])
    return op.Add(op.Erf(scaled), 1.0)


def _tanh_core(op, x):
    cube = pattern.OrValue([op.Pow(x, 3.0), op.Mul(x, op.Mul(x, x))])
    inner = op.Mul(SQRT_2_OVER_PI, op.Add(x, op.Mul(GELU_TANH_COEF, cube)))
    return op.Add(op.Tanh(inner), 1.0)


def _arrangements(core_fn):
    def a(op, x):
        return op.Mul(x, op.Mul(0.5, core_fn(op, x)))

    def b(op, x):
        return op.Mul(op.Mul(x, core_fn(op, x)), 0.5)

    def c(op, x):
        return op.Mul(op.Mul(x, 0.5), core_fn(op, x))

    return (a, b, c)


def _gelu_check(context, x, **_) -> bool:
    return _is_float(x)


def _gelu_fuse(approximate: str):
    def rewrite(op, x, **_):
        return op.Gelu(x, approximate=approximate, _domain=DOMAIN)

    return rewrite


def _onnx_gelu_pattern(op, x):
    return op.Gelu(x, _allow_other_attributes=True, _outputs=["y"])


def _onnx_gelu_fuse(op, x, y, **_):
    approximate = _producer(y).attributes.get_string("approximate", "none")
    return op.Gelu(x, approximate=approximate, _domain=DOMAIN)


def gelu_fuse_rules(opset: int) -> list[pattern.RewriteRule]:
    rules = []
    for approximate, core in (("none", _erf_core), ("tanh", _tanh_core)):
        for i, pat in enumerate(_arrangements(core)):
            rules.append(pattern.RewriteRule(pat, _gelu_fuse(approximate), _gelu_check,
                                             name=f"fuse-gelu-{approximate}-{i}"))
    if opset >= 20:  # the standard Gelu operator
        rules.append(pattern.RewriteRule(_onnx_gelu_pattern, _onnx_gelu_fuse, name="fuse-onnx-gelu"))
    return rules


def _producer(value: ir.Value) -> ir.Node:
    """The node that computes a matched pattern's value (a matched output always has one)."""
    node = value.producer()
    assert node is not None, value.name
    return node


def vlc_gelu_pattern(op, x):
    return op.Gelu(x, _domain=DOMAIN, _allow_other_attributes=True, _outputs=["y"])


def gelu_approximate(y: ir.Value) -> str:
    return _producer(y).attributes.get_string("approximate", "none")


def gelu_reference_form(op, x, approximate: str):
    """GELU in standard operators, in the order PyTorch's dynamo exporter emits.

    The tanh form is also exactly the arrangement ATC's GeluFusionPass fuses into Ascend's Gelu
    (Pow -> Mul -> Add(x) -> Mul -> Tanh -> Add -> Mul -> Mul(x)).
    """
    if approximate == "tanh":
        cube = op.Pow(x, typed_const(op, 3.0, x))
        inner = op.Add(x, op.Mul(typed_const(op, GELU_TANH_COEF, x), cube))
        core = op.Add(op.Tanh(op.Mul(typed_const(op, SQRT_2_OVER_PI, x), inner)),
                      typed_const(op, 1.0, x))
    else:
        core = op.Add(op.Erf(op.Div(x, typed_const(op, SQRT2, x))), typed_const(op, 1.0, x))
    return op.Mul(x, op.Mul(typed_const(op, 0.5, x), core))


def _gelu_expand(op, x, y, **_):
    return gelu_reference_form(op, x, gelu_approximate(y))


def gelu_expand_rules(opset: int) -> list[pattern.RewriteRule]:
    return [pattern.RewriteRule(vlc_gelu_pattern, _gelu_expand, name="expand-gelu")]


# ---- LayerNorm (over the last axis) ---------------------------------------------------------
# decomposed: d = x - ReduceMean(x); y = d / Sqrt(ReduceMean(d^2) + eps) * scale [+ bias]
# standard:   LayerNormalization(x, scale[, bias], axis=-1)   (opset >= 17)

def _reduce_mean(op, x, axes_as_input: bool, name: str):
    if axes_as_input:
        return op.ReduceMean(x, [-1], _outputs=[name])
    return op.ReduceMean(x, axes=[-1], _outputs=[name])


def _normalized(op, x, eps, axes_as_input: bool):
    mean = _reduce_mean(op, x, axes_as_input, "mean")
    d = op.Sub(x, mean)
    sq = pattern.OrValue([op.Pow(d, 2.0), op.Mul(d, d)])
    var = _reduce_mean(op, sq, axes_as_input, "var")
    std = op.Sqrt(op.Add(var, eps))
    return pattern.OrValue([op.Div(d, std), op.Mul(d, op.Reciprocal(std))])


def _decomposed_patterns(axes_as_input: bool):
    def with_bias(op, x, eps, scale, bias):
        return op.Add(op.Mul(_normalized(op, x, eps, axes_as_input), scale), bias)

    def no_bias(op, x, eps, scale):
        return op.Mul(_normalized(op, x, eps, axes_as_input), scale)

    return with_bias, no_bias


def _shape(value: ir.Value) -> tuple | None:
    """A value's shape, looking through Identity and at constant tensors when it is not recorded."""
    while value.shape is None:
        tensor = ir.convenience.get_const_tensor(value)
        if tensor is not None:
            return tuple(tensor.shape)
        producer = value.producer()
        if producer is None or producer.op_type != "Identity" or producer.domain != "":
            return None
        source = producer.inputs[0]
        if source is None:
            return None
        value = source
    return tuple(value.shape)


def _params_ok(x: ir.Value, *params: ir.Value | None) -> bool:
    """scale/bias must be 1-D of the last dimension's size (what LayerNorm broadcasts)."""
    x_shape = _shape(x)
    last = x_shape[-1] if x_shape else None
    for p in params:
        if p is None:
            continue
        shape = _shape(p)
        if shape is None or len(shape) != 1:
            return False
        if isinstance(last, int) and isinstance(shape[0], int) and shape[0] != last:
            return False
    return True


def _keepdims(value: ir.Value) -> bool:
    return _producer(value).attributes.get_int("keepdims", 1) == 1


def _decomposed_check(context, x, eps, scale, mean, var, bias=None, **_) -> bool:
    return (_is_float(x) and const_scalar(eps) is not None and _keepdims(mean) and _keepdims(var)
            and _params_ok(x, scale, bias))


def _decomposed_fuse(op, x, eps, scale, bias=None, **_):
    inputs = [x, scale] if bias is None else [x, scale, bias]
    return op.LayerNorm(*inputs, epsilon=const_scalar(eps), _domain=DOMAIN)


def _standard_ln_with_bias(op, x, scale, bias):
    return op.LayerNormalization(x, scale, bias, _allow_other_attributes=True,
                                 _outputs=["y"])


def _standard_ln_no_bias(op, x, scale):
    return op.LayerNormalization(x, scale, _allow_other_attributes=True,
                                 _outputs=["y"])


def _standard_check(context, x, scale, y, bias=None, **_) -> bool:
    node = y.producer()
    axis = node.attributes.get_int("axis", -1)
    rank = x.shape.rank() if x.shape is not None else None
    last_axis = axis == -1 or (rank is not None and axis == rank - 1)
    return (last_axis and node.attributes.get_int("stash_type", 1) == 1
            and _single_output_used(node) and _params_ok(x, scale, bias))


def _standard_fuse(op, x, scale, y, bias=None, **_):
    eps = _producer(y).attributes.get_float("epsilon", 1e-5)
    inputs = [x, scale] if bias is None else [x, scale, bias]
    return op.LayerNorm(*inputs, epsilon=eps, _domain=DOMAIN)


def layernorm_fuse_rules(opset: int) -> list[pattern.RewriteRule]:
    with_bias, no_bias = _decomposed_patterns(axes_as_input=opset >= 18)
    rules = [
        pattern.RewriteRule(with_bias, _decomposed_fuse, _decomposed_check, name="fuse-layernorm-bias"),
        pattern.RewriteRule(no_bias, _decomposed_fuse, _decomposed_check, name="fuse-layernorm"),
    ]
    if opset >= 17:
        rules += [
            pattern.RewriteRule(_standard_ln_with_bias, _standard_fuse, _standard_check,
                                name="fuse-layernormalization-bias"),
            pattern.RewriteRule(_standard_ln_no_bias, _standard_fuse, _standard_check,
                                name="fuse-layernormalization"),
        ]
    return rules


def _vlc_ln_bias(op, x, scale, bias):
    return op.LayerNorm(x, scale, bias, _domain=DOMAIN, _allow_other_attributes=True, _outputs=["y"])


def _vlc_ln(op, x, scale):
    return op.LayerNorm(x, scale, _domain=DOMAIN, _allow_other_attributes=True, _outputs=["y"])


def layernorm_epsilon(y: ir.Value) -> float:
    return _producer(y).attributes.get_float("epsilon", 1e-5)


def layernorm_decomposed(op, x, scale, bias, eps: float, opset: int):
    """The decomposed form PyTorch's TorchScript exporter emits below opset 17."""
    mean = op.ReduceMean(x, _axes_const(op), keepdims=1) if opset >= 18 else op.ReduceMean(x, axes=[-1], keepdims=1)
    d = op.Sub(x, mean)
    sq = op.Pow(d, typed_const(op, 2.0, x))
    var = (op.ReduceMean(sq, _axes_const(op), keepdims=1) if opset >= 18
           else op.ReduceMean(sq, axes=[-1], keepdims=1))
    y = op.Mul(op.Div(d, op.Sqrt(op.Add(var, typed_const(op, eps, x)))), scale)
    return y if bias is None else op.Add(y, bias)


def layernorm_standard(op, x, scale, bias, eps: float, opset: int):
    """LayerNormalization where the opset has it (>= 17), else the decomposed form."""
    if opset < 17:
        return layernorm_decomposed(op, x, scale, bias, eps, opset)
    inputs = [x, scale] if bias is None else [x, scale, bias]
    return op.LayerNormalization(*inputs, axis=-1, epsilon=eps)


def _ln_rewriter(form):
    def factory(opset: int) -> list[pattern.RewriteRule]:
        def rewrite(op, x, scale, y, bias=None, **_):
            return form(op, x, scale, bias, layernorm_epsilon(y), opset)

        return [pattern.RewriteRule(_vlc_ln_bias, rewrite, name="layernorm-bias"),
                pattern.RewriteRule(_vlc_ln, rewrite, name="layernorm")]

    return factory


layernorm_expand_rules = _ln_rewriter(layernorm_standard)
layernorm_decomposed_rules = _ln_rewriter(layernorm_decomposed)


def rule_set(rules: list[pattern.RewriteRule]) -> pattern.RewriteRuleSet:
    """Rules applied in one pass, each also in every operand order of Add/Mul (commute)."""
    return pattern.RewriteRuleSet(list(rules), commute=True)
