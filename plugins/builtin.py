"""The built-in plugins (SiLU, GELU, LayerNorm), registered like any third-party plugin module.

Which TensorRT kernels are on by default is data: plugins/decisions.json, written by the kernel
benchmark (benchmarks/plugins/kernels.py); a kernel never measured stays off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlc.hookspecs import hookimpl
from vlc.plugins import ascend, patterns, trt
from vlc.plugins.base import OpPlugin, TargetImpl, decision

TRT_TARGETS = ("trt", "trt-rtx")

_TORCH = TargetImpl("unsupported", "the torch target runs the PyTorch module, not the ONNX graph")
_ORT_REASON = ("ONNX Runtime runs the standard form and applies its own fusions (its optimizer "
               "fuses GELU and LayerNorm into its kernels); no vlc kernel")


def _trt_kernel(plugin: str, native_form: str, plugin_rules: Callable[..., Any],
                native_rules: Callable[..., Any]) -> TargetImpl:
    on, why = decision(plugin, "trt")
    return TargetImpl("plugin", f"Triton kernel as a TensorRT Python plugin (AOT PTX); {why}",
                      default_on=on, plugin_rules=plugin_rules, native_rules=native_rules,
                      native_form=native_form, runtime=trt)


def _silu() -> OpPlugin:
    trt_impl = _trt_kernel("silu", "Mul(x, Sigmoid(x)), fused by TensorRT's pointwise fusion",
                           trt.silu_plugin_rules, patterns.silu_expand_rules)
    ascend_impl = TargetImpl("native-preferred",
                             "ATC parses Sigmoid and Mul natively (a Swish fusion is unconfirmed)",
                             native_rules=ascend.silu_native_rules,
                             native_form=ascend.NATIVE_FORMS["silu"])
    return OpPlugin(
        name="silu", op_type="SiLU", summary="SiLU / Swish: x * sigmoid(x)",
        pattern="Mul(x, Sigmoid(x)) in either operand order",
        fuse_rules=patterns.silu_fuse_rules, expand_rules=patterns.silu_expand_rules,
        targets={**{t: trt_impl for t in TRT_TARGETS}, **{t: ascend_impl for t in ascend.ASCEND_TARGETS},
                 "onnxruntime": TargetImpl("native-preferred", _ORT_REASON,
                                           native_rules=patterns.silu_expand_rules,
                                           native_form="Mul(x, Sigmoid(x))"),
                 "torch": _TORCH})


def _gelu() -> OpPlugin:
    trt_impl = _trt_kernel("gelu", "the reference form (erf or tanh), fused by TensorRT's pointwise "
                                   "fusion", trt.gelu_plugin_rules, patterns.gelu_expand_rules)
    ascend_impl = TargetImpl(
        "native-preferred",
        "tanh form is fused by ATC's GeluFusionPass into Gelu; FastGelu (x*sigmoid(1.702x), max abs "
        "error 0.02 against GELU) only when the gelu plugin is named",
        plugin_rules=ascend.gelu_fastgelu_rules, native_rules=ascend.gelu_native_rules,
        native_form=ascend.NATIVE_FORMS["gelu"])
    return OpPlugin(
        name="gelu", op_type="Gelu", summary="GELU, erf form and tanh approximation (attribute approximate)",
        pattern="0.5*x*(1+erf(x/sqrt2)) and 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715x^3))) as the "
                "dynamo and TorchScript exporters arrange them; ONNX Gelu (opset 20)",
        fuse_rules=patterns.gelu_fuse_rules, expand_rules=patterns.gelu_expand_rules,
        targets={**{t: trt_impl for t in TRT_TARGETS}, **{t: ascend_impl for t in ascend.ASCEND_TARGETS},
                 "onnxruntime": TargetImpl("native-preferred", _ORT_REASON,
                                           native_rules=patterns.gelu_expand_rules,
                                           native_form="Div/Erf/Add/Mul (or the tanh form)"),
                 "torch": _TORCH})


def _layernorm() -> OpPlugin:
    trt_impl = TargetImpl(
        "native-preferred",
        "opset-17 LayerNormalization maps to TensorRT's native normalization layer, which keeps "
        "fp32 statistics in fp16 networks (the decomposed form overflows in fp16); the reference "
        "write-ups' hand-written LayerNorm plugin was slower (ViLBERT) and wrong (CLIP); the vlc "
        "kernel runs only when named",
        plugin_rules=trt.layernorm_plugin_rules, native_rules=patterns.layernorm_expand_rules,
        native_form="LayerNormalization (opset >= 17)", runtime=trt)
    ascend_impl = TargetImpl("native-preferred",
                             "ATC parses LayerNormalization (opset 17/18) into its LayerNorm operator",
                             native_rules=ascend.layernorm_native_rules,
                             native_form=ascend.NATIVE_FORMS["layernorm"])
    return OpPlugin(
        name="layernorm", op_type="LayerNorm", summary="LayerNorm over the last axis, with scale and optional bias",
        pattern="ReduceMean/Sub/Pow|Mul/ReduceMean/Add/Sqrt/Div|Reciprocal*Mul/Mul[/Add] over axis -1 "
                "(axes as attribute or input); LayerNormalization with axis -1",
        fuse_rules=patterns.layernorm_fuse_rules, expand_rules=patterns.layernorm_expand_rules,
        targets={**{t: trt_impl for t in TRT_TARGETS}, **{t: ascend_impl for t in ascend.ASCEND_TARGETS},
                 "onnxruntime": TargetImpl("native-preferred", _ORT_REASON,
                                           native_rules=patterns.layernorm_expand_rules,
                                           native_form="LayerNormalization (opset >= 17)"),
                 "torch": _TORCH})


def builtin_plugins() -> list[OpPlugin]:
    return [_silu(), _gelu(), _layernorm()]


@hookimpl
def register_plugins(register: Callable[[Any], None]) -> None:
    for plugin in builtin_plugins():
        register(plugin)


__all__ = ["builtin_plugins", "register_plugins"]
