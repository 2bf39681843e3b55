"""Built-in graph passes, registered like any plugin's. All are onnxscript rewriter/optimizer rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlc.frontend.passes import GraphPass
from vlc.hookspecs import hookimpl

# The passes `vlc export` runs when --passes is not given.
DEFAULT_PASSES = ("rewrite-default", "linear-to-matmul", "fuse-layernorm", "remove-unused")


def _rewrite_default(model: Any) -> Any:
    from onnxscript import rewriter

    return rewriter.rewrite(model)


def _linear_to_matmul(model: Any) -> Any:
    # Also a workaround: onnxscript 0.7's attention fusion takes the Reshape that flattens the
    # attention output for a Gemm as its own (B, S, D) one and leaves the Gemm a 3-D input.
    from onnxscript import rewriter

    from vlc.frontend.linear_rule import flattened_linear_rule

    return rewriter.rewrite(model, pattern_rewrite_rules=[flattened_linear_rule])


def _fuse_layernorm(model: Any) -> None:
    # A decomposed LayerNorm overflows in fp16; LayerNormalization (opset 17+) maps to the
    # native normalization layers of TensorRT and ATC, which compute in fp32.
    from onnxscript.rewriter.rules.fusion import _layer_norm

    opset = model.opset_imports.get("", 0)
    if opset >= 17:
        _layer_norm.fuse_layer_normalization(model)


def _fold_constants(model: Any) -> None:
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(model)


def _remove_unused(model: Any) -> None:
    import onnx_ir.passes.common as common

    common.RemoveUnusedNodesPass()(model)
    common.RemoveUnusedFunctionsPass()(model)
    common.RemoveUnusedOpsetsPass()(model)


def ort_fusions_counted(model: Any) -> tuple[Any, dict[str, int]]:
    """onnxscript's ONNX Runtime fusions; the model and how often each fired (non-zero counts)."""
    from onnxscript.rewriter import ort_fusions
    from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias

    fused, counts = ort_fusions.optimize_for_ort(model)
    # onnxscript 0.7 runs its attention-bias fusion before the shapes it checks are known again;
    # a second run folds the Q/K/V bias Adds into MultiHeadAttention's bias input
    counts["mha_bias"] = counts.get("mha_bias", 0) + fuse_mha_bias(fused)
    return fused, {rule: int(n) for rule, n in counts.items() if n}


def _ort_fusions(model: Any) -> Any:
    # com.microsoft fused operators (MultiHeadAttention, SkipLayerNormalization, BiasGelu, ...)
    # that ONNX Runtime's CUDA kernels implement; TensorRT and ATC cannot read them, so this
    # pass belongs to the onnxruntime target's pass set, never to the shared normalized graph.
    return ort_fusions_counted(model)[0]


BUILTIN_PASSES: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("rewrite-default", "onnxscript's default rewrite rules (no-op removal, slice/reshape "
                        "collapsing, BatchNorm and Pad folding into Conv)", _rewrite_default),
    ("linear-to-matmul", "Reshape -> Gemm -> Reshape (a Linear on a 3-D input) -> MatMul + Add",
     _linear_to_matmul),
    ("fuse-layernorm", "decomposed LayerNorm -> LayerNormalization (opset >= 17)", _fuse_layernorm),
    ("fold-constants", "constant folding", _fold_constants),
    ("remove-unused", "drop unused nodes, functions and opset imports", _remove_unused),
    ("ort-fusions", "ONNX Runtime contrib fusions (attention, skip-LayerNorm, GELU); "
                    "onnxruntime target only", _ort_fusions),
)


@hookimpl
def register_passes(register: Callable[[GraphPass], None]) -> None:
    for name, summary, fn in BUILTIN_PASSES:
        register(GraphPass(name, summary, fn))
