"""The onnxruntime target's own graph passes and their pass set, `onnxruntime-cuda`.

onnxscript's ONNX Runtime fusions (attention, skip-LayerNorm, GELU into com.microsoft fused
operators) and vlc's rewrites for ONNX Runtime's CUDA kernels (cuda_rewrites.py). TensorRT and
ATC cannot read the fused operators, so these passes run on the onnxruntime target's copy of
the graph, never on the shared normalized one. `undone_by` names the ONNX Runtime graph
optimizers that would undo a pass; sessions of graphs that had the pass turn them off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from vlc.frontend.export import save_model
from vlc.frontend.passes import GraphPass, PassRecord, PassSet, run_pass_set
from vlc.onnx_files import external_data_files


def ort_fusions_counted(model: Any) -> tuple[Any, dict[str, int]]:
    """onnxscript's ONNX Runtime fusions; the model and how often each fired (non-zero counts)."""
    from onnxscript.rewriter import ort_fusions
    from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias

    fused, counts = ort_fusions.optimize_for_ort(model)
    # onnxscript 0.7 runs its attention-bias fusion before the shapes it checks are known again;
    # a second run folds the Q/K/V bias Adds into MultiHeadAttention's bias input
    counts["mha_bias"] = counts.get("mha_bias", 0) + fuse_mha_bias(fused)
    return fused, {rule: int(n) for rule, n in counts.items() if n}


class OrtFusionsPass(GraphPass):
    """onnxscript's optimize_for_ort; the record counts each fusion by its onnxscript name."""

    undone_by: tuple[str, ...] = ()

    def call(self, model: Any, ctx: Any, record: PassRecord) -> Any:
        fused, counts = ort_fusions_counted(model)
        for rule, count in counts.items():
            record.add(rule, count=count)
        return fused


class CudaRulePass(GraphPass):
    """A rule group of cuda_rewrites.RULES (matched on static dims after shape inference)."""

    undone_by: tuple[str, ...] = ()

    def __init__(self, name: str, summary: str, undone_by: Sequence[str] = ()) -> None:
        super().__init__(name, summary)
        self.undone_by = tuple(undone_by)

    def call(self, model: Any, ctx: Any, record: PassRecord) -> None:
        import onnx_ir.passes.common as common_passes
        from onnxscript.rewriter import pattern

        from vlc.targets.onnxruntime.cuda_rewrites import RULES  # local: loads onnx_ir and onnxscript

        common_passes.ShapeInferencePass()(model)  # the rules match on static dims
        fired = pattern.RewriteRuleSet(list(RULES[self.name])).apply_to_model(model)
        if fired:
            record.add(self.name, count=int(fired))
        common_passes.RemoveUnusedNodesPass()(model)


FUSIONS: tuple[OrtFusionsPass | CudaRulePass, ...] = (
    CudaRulePass("patch-matmul", "patch-embedding Conv (kernel == stride) -> patchify + one MatMul, "
                                 "and its token transposes -> one Reshape"),
    CudaRulePass("conv-bias-add", "Conv(x, w, b) -> Conv(x, w) + b (ONNX Runtime's elementwise Add "
                                  "beats cuDNN's bias kernel)", undone_by=("ConvAddFusion",)),
    OrtFusionsPass("ort-fusions", "ONNX Runtime contrib fusions (attention, skip-LayerNorm, GELU)"),
    CudaRulePass("qkv-attention", "MatMul -> Split -> MultiHeadAttention (a packed QKV projection) "
                                  "-> one com.microsoft Attention"),
)

# The order they run in, whichever of them -O fusions turns on.
FUSION_SET = PassSet("onnxruntime-cuda", "onnxruntime",
                     "the onnxruntime target's graph passes (-O fusions; by default on CUDA)",
                     tuple(p.name for p in FUSIONS))
FUSION_PASSES = FUSION_SET.passes

# ONNX Runtime graph optimizers that would undo a pass of this set (ConvAddFusion folds
# conv-bias-add's Add back into the Conv).
UNDONE_BY: dict[str, tuple[str, ...]] = {p.name: p.undone_by for p in FUSIONS if p.undone_by}


def run_fusions(onnx_path: Path, passes: Iterable[str]) -> list[PassRecord]:
    """Rewrite the artifact's graph in place with the named passes (in the set's order)."""
    import onnx_ir as ir

    before = external_data_files(onnx_path)
    model, records = run_pass_set(ir.load(str(onnx_path)), FUSION_SET, only=passes)
    save_model(model, onnx_path)
    for sidecar in set(before) - set(external_data_files(onnx_path)):
        sidecar.unlink()  # data the rewritten graph no longer references
    return records


def apply_fusions(onnx_path: Path, passes: Iterable[str]) -> dict[str, int]:
    """Rewrite the artifact's graph in place with the named passes; how often each rule fired."""
    counts: dict[str, int] = {}
    for record in run_fusions(onnx_path, passes):
        counts.update(record.rules)
    return counts


def register_passes(register: Callable[[GraphPass], None]) -> None:
    for graph_pass in FUSIONS:
        register(graph_pass)


def register_pass_sets(register: Callable[[PassSet], None]) -> None:
    register(FUSION_SET)
