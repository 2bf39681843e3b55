"""ascend-freeze-shapes: fix input shapes per batch size and fold what becomes constant.

ATC builds one static graph per shape (or per dynamic-batch gear); a graph whose shape
arithmetic is already folded converts more reliably and lets later patches see static
shapes. Uses onnxsim with the given input shapes (as the reference deployments did), and
onnxscript's constant folding when onnxsim is missing or rejects the graph.
"""

from __future__ import annotations

from typing import Any

from vlc.ascend_patches.core import PatchContext, PatchRecord, patch
from vlc.ascend_patches.graph import infer_shapes


def input_shapes(model: Any, ctx: PatchContext) -> dict[str, list[int | str]]:
    """The shape each graph input gets: ctx.shapes, else a symbolic first axis set to ctx.batch
    (other symbolic dims stay symbolic: only --shapes sizes them)."""
    inits = {i.name for i in model.graph.initializer}
    shapes: dict[str, list[int | str]] = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = value.type.tensor_type.shape.dim
        if value.name in ctx.shapes:
            shapes[value.name] = list(ctx.shapes[value.name])
            continue
        shape: list[int | str] = []
        for axis, d in enumerate(dims):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif ctx.batch is not None and axis == 0:
                shape.append(ctx.batch)
            else:
                shape.append(d.dim_param or "batch")
        shapes[value.name] = shape
    return shapes


def set_input_shapes(model: Any, shapes: dict[str, list[int | str]]) -> int:
    changed = 0
    for value in model.graph.input:
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        wanted = shapes[value.name]
        if len(dims) != len(wanted):
            raise ValueError(f"input {value.name} has rank {len(dims)}, the shape given has {len(wanted)}")
        for d, size in zip(dims, wanted):
            if isinstance(size, int):
                if not d.HasField("dim_value") or d.dim_value != size:
                    d.dim_value = size
                    changed += 1
            elif not d.HasField("dim_value"):
                d.dim_param = size
    return changed


@patch("ascend-freeze-shapes", "fix input shapes per batch size (symbolic dims -> the batch) "
       "and fold shape arithmetic (onnxsim, else onnxscript constant folding)")
def freeze_shapes(model: Any, ctx: PatchContext, record: PatchRecord) -> Any:
    import onnx

    shapes = input_shapes(model, ctx)
    record.changed += set_input_shapes(model, shapes)
    # Output and intermediate shapes inferred for the old dims are stale now.
    del model.graph.value_info[:]
    # Their dims are cleared but the rank kept: the checker requires a shape on graph outputs of
    # some files (a Loop's), and freezing the batch never changes a rank.
    for out in model.graph.output:
        for dim in out.type.tensor_type.shape.dim:
            dim.Clear()
    static = all(all(isinstance(d, int) for d in s) for s in shapes.values())
    try:
        import onnxsim

        standard = {n.domain for n in model.graph.node}
        # Newer onnxsim fuses attention into ONNX Runtime's com.microsoft::Attention, which
        # ATC cannot parse: skip that optimizer, and refuse any result with new custom ops.
        simplified, ok = onnxsim.simplify(
            model, overwrite_input_shapes={k: v for k, v in shapes.items()} if static else None,
            dynamic_input_shape=not static, check_n=0, skipped_optimizers=["fuse_attention"])
        if not ok:
            raise RuntimeError("onnxsim's check failed")
        added = {n.domain for n in simplified.graph.node} - standard - {"", "ai.onnx"}
        if added:
            raise RuntimeError(f"onnxsim introduced operators of domain(s) {sorted(added)}")
        record.notes.append(f"onnxsim {getattr(onnxsim, '__version__', '')}".strip())
        model = simplified
    except Exception as exc:  # noqa: BLE001 - onnxsim absent or refusing: the onnxscript optimizer folds instead
        import onnx_ir as ir
        import onnxscript.optimizer

        record.notes.append(f"onnxscript optimizer (onnxsim: {type(exc).__name__}: {str(exc)[:120]})")
        ir_model = ir.from_proto(model)
        onnxscript.optimizer.optimize(ir_model)
        model = ir.to_proto(ir_model)
    model = infer_shapes(model)
    onnx.checker.check_model(model)
    return model
