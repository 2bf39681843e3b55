"""TensorRT implementations: graph lowering to plugin nodes, Python plugins, legacy .so libraries.

Legacy .so plugin libraries are loaded by the trt target (``-O plugin_libraries=``, ctypes with
RTLD_GLOBAL before parsing, targets/trt/builder.py); this module does not load them a second way.

Graph side: a lowered node keeps its ``ai.vlc`` op type and gains the attribute
``plugin_namespace="vlc"`` (plus ``plugin_version`` and ``aot``); TensorRT's ONNX parser maps a
node whose op type is a registered plugin's name and whose ``plugin_namespace`` matches to that
plugin (its fallback plugin importer). Every other attribute becomes a plugin field, so lowering
rewrites the attributes to exactly the fields the plugin declares.

Runtime side: the plugins are TensorRT "quickly deployable" Python plugins (``tensorrt.plugin``,
TensorRT >= 10.6): ``@trtp.register`` declares ``vlc::SiLU`` / ``vlc::Gelu`` / ``vlc::LayerNorm``,
``@trtp.aot_impl`` (TensorRT >= 10.9) hands TensorRT the Triton kernel compiled to PTX so the
engine runs without Python, and ``@trtp.impl`` is the JIT fallback that launches the same kernel
through torch. TensorRT is never imported here at module level; the target passes its module
(``tensorrt`` or ``tensorrt_rtx``) in.

What has run: the lowering rules and the error paths below (tests/plugins). The Python plugins
have not run anywhere yet: TensorRT-RTX 1.7 ships no working ``tensorrt_rtx.plugin`` (see
``python_plugin_module``), and no machine here has full TensorRT with a supported GPU.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from vlc.errors import CompileError
from vlc.plugins.base import DOMAIN, PLUGIN_NAMESPACE
from vlc.plugins.kernels import ops
from vlc.plugins.patterns import gelu_approximate, layernorm_epsilon

PLUGIN_VERSION = "1"
MIN_PYTHON_PLUGIN_VERSION = (10, 6)
MIN_AOT_VERSION = (10, 9)


# ---- graph lowering ------------------------------------------------------------------------

def _plugin_attrs(aot: bool) -> dict[str, Any]:
    return {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION, "aot": int(aot)}


def _not_lowered(context, y, **_) -> bool:
    return "plugin_namespace" not in y.producer().attributes


def _silu_pat(op, x):
    return op.SiLU(x, _domain=DOMAIN, _allow_other_attributes=True, _outputs=["y"])


def _gelu_pat(op, x):
    return op.Gelu(x, _domain=DOMAIN, _allow_other_attributes=True, _outputs=["y"])


def _ln_bias_pat(op, x, scale, bias):
    return op.LayerNorm(x, scale, bias, _domain=DOMAIN, _allow_other_attributes=True, _outputs=["y"])


def _ln_pat(op, x, scale):
    return op.LayerNorm(x, scale, _domain=DOMAIN, _allow_other_attributes=True, _outputs=["y"])


def silu_plugin_rules(opset: int, aot: bool = True) -> list[pattern.RewriteRule]:
    def rewrite(op, x, **_):
        return op.SiLU(x, _domain=DOMAIN, **_plugin_attrs(aot))

    return [pattern.RewriteRule(_silu_pat, rewrite, _not_lowered, name="trt-silu")]


def gelu_plugin_rules(opset: int, aot: bool = True) -> list[pattern.RewriteRule]:
    def rewrite(op, x, y, **_):
        tanh = int(gelu_approximate(y) == "tanh")
        return op.Gelu(x, approx_tanh=tanh, _domain=DOMAIN, **_plugin_attrs(aot))

    return [pattern.RewriteRule(_gelu_pat, rewrite, _not_lowered, name="trt-gelu")]


def layernorm_plugin_rules(opset: int, aot: bool = True) -> list[pattern.RewriteRule]:
    """The plugin always takes (x, scale, bias): a missing bias becomes a zero constant."""

    def rewrite(op, x, scale, y, bias=None, **_):
        if bias is None:
            size = ir.convenience.get_const_tensor(scale)
            if size is None:
                raise ValueError("LayerNorm without bias needs a constant scale to size the zero bias")
            dtype = scale.dtype.numpy() if scale.dtype is not None else np.float32
            bias = op.Constant(value=ir.tensor(np.zeros(size.shape.numpy(), dtype=dtype)))
        return op.LayerNorm(x, scale, bias, epsilon=layernorm_epsilon(y), _domain=DOMAIN,
                            **_plugin_attrs(aot))

    def needs_const_scale(context, y, scale, bias=None, **kw) -> bool:
        return _not_lowered(context, y) and (bias is not None
                                             or ir.convenience.get_const_tensor(scale) is not None)

    return [pattern.RewriteRule(_ln_bias_pat, rewrite, needs_const_scale, name="trt-layernorm-bias"),
            pattern.RewriteRule(_ln_pat, rewrite, needs_const_scale, name="trt-layernorm")]


def plugin_nodes(model: ir.Model) -> dict[str, int]:
    """op type -> count of nodes lowered to vlc TensorRT plugins."""
    found: dict[str, int] = {}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        ns = node.attributes.get("plugin_namespace")
        if node.domain == DOMAIN and ns is not None and ns.as_string() == PLUGIN_NAMESPACE:
            found[node.op_type] = found.get(node.op_type, 0) + 1
    return found


# ---- runtime: Python quickly-deployable plugins -----------------------------------------------

def trt_version(trt: Any) -> tuple[int, ...]:
    return tuple(int(p) for p in str(getattr(trt, "__version__", "0")).split(".")[:3] if p.isdigit())


def python_plugin_module(trt: Any) -> Any:
    """``<tensorrt module>.plugin``, or CompileError saying why Python plugins cannot be used.

    Known case: tensorrt_rtx 1.7.1 ships ``tensorrt_rtx/plugin/*.py`` that re-export
    ``tensorrt_rtx_bindings.plugin``, which the bindings wheel does not contain, so the import fails.
    """
    name = getattr(trt, "__name__", "tensorrt")
    version = getattr(trt, "__version__", "?")
    if name == "tensorrt" and trt_version(trt) < MIN_PYTHON_PLUGIN_VERSION:
        raise CompileError(f"TensorRT {version} has no Python plugins (tensorrt.plugin needs >= 10.6)",
                           fix="upgrade TensorRT, or compile with the vlc plugins off (the default)")
    try:
        return importlib.import_module(f"{name}.plugin")
    except ImportError as exc:
        raise CompileError(
            f"{name} {version} cannot load Python plugins: `import {name}.plugin` fails ({exc})",
            fix="vlc plugin nodes need TensorRT >= 10.9 with tensorrt.plugin; compile with the vlc "
                "plugins off (the default), or load a .so plugin library instead") from exc


_REGISTERED: dict[str, set[str]] = {}


def register_python_plugins(trt: Any, ops: Iterable[str], *,
                            capability: tuple[int, int] = (8, 6)) -> list[str]:
    """Register the vlc::<op> Python plugins that a graph uses; returns their ids.

    ``capability`` is the compute capability the AOT kernels are compiled for (the engine's
    target; PTX also runs on newer GPUs through the driver's JIT).
    """
    trtp = python_plugin_module(trt)
    done = _REGISTERED.setdefault(trt.__name__, set())
    aot = trt_version(trt) >= MIN_AOT_VERSION or trt.__name__ != "tensorrt"
    registered = []
    for op in ops:
        if op not in _DEFINERS:
            raise CompileError(f"no TensorRT plugin for {DOMAIN}::{op}",
                               fix=f"known plugins: {', '.join(sorted(_DEFINERS))}")
        if op not in done:
            _DEFINERS[op](trt, trtp, capability, aot)
            done.add(op)
        registered.append(f"{PLUGIN_NAMESPACE}::{op}")
    return registered


def prepare(trt: Any, model: Any, *,
            capability: tuple[int, int] = (8, 6)) -> list[str]:
    """What the trt target calls before parsing: register the Python plugins the graph uses.

    ``model``: an onnx_ir.Model, an onnx.ModelProto or the path of an .onnx file.

    Returns the registered plugin ids (empty for a graph without vlc plugin nodes, which needs
    nothing). Legacy .so plugin libraries are loaded by the trt target itself
    (``-O plugin_libraries=``, targets/trt/builder.py), before this.
    """
    if not isinstance(model, ir.Model):
        import onnx

        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(str(model), load_external_data=False)
        model = ir.serde.deserialize_model(model)
    ops = sorted(plugin_nodes(model))
    return register_python_plugins(trt, ops, capability=capability) if ops else []


def _dtype_name(trt: Any, dtype: Any) -> str:
    if dtype == trt.float32:
        return "float32"
    if dtype == trt.float16:
        return "float16"
    raise CompileError(f"vlc plugins take float32 or float16, got {dtype}")


def _launch(trtp: Any, compiled: Any, grid: Any, extra: list[Any]) -> tuple[Any, Any, Any, Any]:
    params = trtp.KernelLaunchParams()
    params.grid_x = grid
    params.block_x = compiled.num_warps * 32
    params.shared_mem = compiled.shared
    args = trtp.SymIntExprs(len(extra))
    for i, value in enumerate(extra):
        args[i] = trtp.SymInt32(value)
    return compiled.name.encode(), compiled.ptx.encode(), params, args


def _torch_views(inputs: list[Any], outputs: list[Any], stream: int) -> tuple[Any, list[Any], list[Any]]:
    import torch

    ctx = torch.cuda.stream(torch.cuda.ExternalStream(stream))
    return ctx, [torch.as_tensor(t, device="cuda") for t in inputs], \
        [torch.as_tensor(t, device="cuda") for t in outputs]


def _define_silu(trt: Any, trtp: Any, capability: tuple[int, int], aot: bool) -> None:
    pid = f"{PLUGIN_NAMESPACE}::SiLU"

    @trtp.register(pid)
    def desc(inp0: trtp.TensorDesc) -> trtp.TensorDesc:
        return inp0.like()

    @trtp.autotune(pid)
    def tune(inp0, outputs):
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16")]

    @trtp.impl(pid)
    def impl(inp0, outputs, stream):
        ctx, (x,), (y,) = _torch_views([inp0], list(outputs), stream)
        with ctx:
            y.copy_(ops.silu(x))

    if aot:
        @trtp.aot_impl(pid)
        def aot_impl(inp0, outputs, tactic):
            compiled = ops.compile_ptx("silu", _dtype_name(trt, inp0.dtype), capability)
            n = inp0.shape_expr.numel()
            return _launch(trtp, compiled, trtp.cdiv(n, compiled.block), [n])


def _define_gelu(trt: Any, trtp: Any, capability: tuple[int, int], aot: bool) -> None:
    pid = f"{PLUGIN_NAMESPACE}::Gelu"

    @trtp.register(pid)
    def desc(inp0: trtp.TensorDesc, approx_tanh: int) -> trtp.TensorDesc:
        return inp0.like()

    @trtp.autotune(pid)
    def tune(inp0, approx_tanh, outputs):
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16")]

    @trtp.impl(pid)
    def impl(inp0, approx_tanh, outputs, stream):
        ctx, (x,), (y,) = _torch_views([inp0], list(outputs), stream)
        with ctx:
            y.copy_(ops.gelu(x, "tanh" if approx_tanh else "none"))

    if aot:
        @trtp.aot_impl(pid)
        def aot_impl(inp0, approx_tanh, outputs, tactic):
            compiled = ops.compile_ptx("gelu", _dtype_name(trt, inp0.dtype), capability,
                                       approximate="tanh" if approx_tanh else "none")
            n = inp0.shape_expr.numel()
            return _launch(trtp, compiled, trtp.cdiv(n, compiled.block), [n])


def _define_layernorm(trt: Any, trtp: Any, capability: tuple[int, int], aot: bool) -> None:
    pid = f"{PLUGIN_NAMESPACE}::LayerNorm"

    @trtp.register(pid)
    def desc(inp0: trtp.TensorDesc, inp1: trtp.TensorDesc, inp2: trtp.TensorDesc,
             epsilon: float) -> trtp.TensorDesc:
        return inp0.like()

    @trtp.autotune(pid)
    def tune(inp0, inp1, inp2, epsilon, outputs):
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16")]

    @trtp.impl(pid)
    def impl(inp0, inp1, inp2, epsilon, outputs, stream):
        ctx, (x, w, b), (y,) = _torch_views([inp0, inp1, inp2], list(outputs), stream)
        with ctx:
            y.copy_(ops.layer_norm(x, w, b, epsilon))

    if aot:
        @trtp.aot_impl(pid)
        def aot_impl(inp0, inp1, inp2, epsilon, outputs, tactic):
            last = inp0.shape_expr[inp0.ndim - 1]
            if not last.is_constant:
                raise CompileError("the vlc::LayerNorm AOT kernel needs a static last dimension",
                                   fix="fix the normalized axis in the optimization profile")
            n = int(last.constant_value)
            compiled = ops.compile_ptx("layernorm", _dtype_name(trt, inp0.dtype), capability,
                                       eps=epsilon, n=n)
            m = inp0.shape_expr.numel() // n
            return _launch(trtp, compiled, trtp.cdiv(m, compiled.block), [m, n])


_DEFINERS = {"SiLU": _define_silu, "Gelu": _define_gelu, "LayerNorm": _define_layernorm}
