"""The front end's graph passes and pass sets, registered like any plugin's.

All are onnxscript rewriter/optimizer rules or onnx_ir passes. `frontend-default` is what
`vlc export` runs when --passes is not given; `frontend-optional` holds the passes users may
name with --passes that no default run includes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlc.frontend.passes import FunctionPass, GraphPass, IrPass, PassRecord, PassSet
from vlc.hookspecs import hookimpl


def _rewrite_default(model: Any, ctx: Any, record: PassRecord) -> Any:
    # onnxscript's public rewrite() keeps its default rule list private, so this pass reports
    # "modified" by its node count only
    from onnxscript import rewriter

    return rewriter.rewrite(model)


def _rules_then_cleanup(*rules: Any) -> Any:
    """What onnxscript's rewrite() runs for a rule list, as an onnx_ir pass (its modified flag)."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript import rewriter

    return ir.passes.PassManager((rewriter.RewritePass(list(rules)), common.RemoveUnusedNodesPass(),
                                  common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass()))


def _linear_to_matmul() -> Any:
    # Also a workaround: onnxscript 0.7's attention fusion takes the Reshape that flattens the
    # attention output for a Gemm as its own (B, S, D) one and leaves the Gemm a 3-D input.
    from vlc.frontend.linear_rule import flattened_linear_rule  # local: loads onnx_ir and onnxscript

    return _rules_then_cleanup(flattened_linear_rule)


def _fuse_layernorm(model: Any, ctx: Any, record: PassRecord) -> None:
    # A decomposed LayerNorm overflows in fp16; LayerNormalization (opset 17+) maps to the
    # native normalization layers of TensorRT and ATC, which compute in fp32.
    from onnxscript.rewriter.rules.fusion import _layer_norm

    opset = model.opset_imports.get("", 0)
    if opset >= 17:
        record.add("layer-normalization", count=int(_layer_norm.fuse_layer_normalization(model)))
    else:
        record.notes.append(f"opset {opset} < 17 has no LayerNormalization: nothing fused")


def _fold_constants(model: Any, ctx: Any, record: PassRecord) -> None:
    import onnxscript.optimizer

    record.modified = bool(onnxscript.optimizer.fold_constants(model).modified)


def _remove_unused() -> Any:
    import onnx_ir as ir
    import onnx_ir.passes.common as common

    return ir.passes.Sequential(common.RemoveUnusedNodesPass(), common.RemoveUnusedFunctionsPass(),
                                common.RemoveUnusedOpsetsPass())


BUILTIN_PASSES: tuple[GraphPass, ...] = (
    FunctionPass("rewrite-default", "onnxscript's default rewrite rules (no-op removal, slice/reshape "
                                    "collapsing, BatchNorm and Pad folding into Conv)", _rewrite_default),
    IrPass("linear-to-matmul", "Reshape -> Gemm -> Reshape (a Linear on a 3-D input) -> MatMul + Add",
           _linear_to_matmul),
    FunctionPass("fuse-layernorm", "decomposed LayerNorm -> LayerNormalization (opset >= 17)",
                 _fuse_layernorm),
    FunctionPass("fold-constants", "constant folding (onnxscript's optimizer)", _fold_constants),
    IrPass("remove-unused", "drop unused nodes, functions and opset imports", _remove_unused),
)

DEFAULT_SET = PassSet("frontend-default", "frontend", "what vlc export runs when --passes is not given",
                      ("rewrite-default", "linear-to-matmul", "fuse-layernorm", "remove-unused"))
OPTIONAL_SET = PassSet("frontend-optional", "frontend", "offered to vlc export --passes, in no default run",
                       ("fold-constants",))

# The passes `vlc export` runs when --passes is not given.
DEFAULT_PASSES = DEFAULT_SET.passes


@hookimpl
def register_passes(register: Callable[[GraphPass], None]) -> None:
    for graph_pass in BUILTIN_PASSES:
        register(graph_pass)


@hookimpl
def register_pass_sets(register: Callable[[PassSet], None]) -> None:
    register(DEFAULT_SET)
    register(OPTIONAL_SET)
