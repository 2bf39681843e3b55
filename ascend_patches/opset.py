"""ascend-opset: bring the graph into the ONNX opset range the selected CANN version parses.

CANN 5/6 parse opsets 9-13, CANN 7 9-18, CANN 8 per operator with 18 the highest seen
(vlc/ascend_patches/cann.toml). Ops newer than the target opset that the converter
cannot lower are decomposed first: Gelu (opset 20) into its Erf (or tanh) formula,
LayerNormalization (opset 17) into the ReduceMean/Sub/Pow/... sequence. Then
onnx.version_converter moves every node to the target opset.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vlc.ascend_patches.cann import cann_info
from vlc.ascend_patches.core import PatchContext, PatchRecord, patch
from vlc.ascend_patches.graph import Graph, attr, infer_shapes, node, opset, set_opset, standard_nodes, value_types
from vlc.ascend_patches.layernorm import decompose_layernorm
from vlc.errors import CompileError


def target_opset(model: Any, ctx: PatchContext) -> int:
    info = cann_info(ctx.cann)
    return min(max(opset(model), info.min_opset), info.max_opset)


def decompose_gelu(model: Any, record: PatchRecord) -> Any:
    targets = standard_nodes(model, "Gelu")
    if not targets:
        return model
    types = value_types(infer_shapes(model))
    g = Graph(model)
    from onnx import helper

    for n in targets:
        base = n.name or n.output[0]
        x = n.input[0]
        dtype = helper.tensor_dtype_to_np_dtype(types.get(x, (1, None))[0])

        def const(tag: str, value: float) -> str:
            return g.add_constant(f"{base}_{tag}", np.array(value, dtype=dtype))  # noqa: B023 - called in this iteration

        t = {k: g.fresh(f"{base}_{k}") for k in ("inner", "act", "one_plus", "half_x", "x2", "cube", "poly")}
        approximate = attr(n, "approximate", b"none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
        if approximate == "tanh":
            nodes = [
                node("Mul", [x, x], [t["x2"]], name=f"{base}_x2"),
                node("Mul", [t["x2"], x], [t["cube"]], name=f"{base}_x3"),
                node("Mul", [t["cube"], const("c", 0.044715)], [t["poly"]], name=f"{base}_cubic"),
            ]
            summed = g.fresh(f"{base}_sum")
            nodes += [
                node("Add", [x, t["poly"]], [summed], name=f"{base}_sum"),
                node("Mul", [summed, const("k", math.sqrt(2.0 / math.pi))], [t["inner"]], name=f"{base}_scale"),
                node("Tanh", [t["inner"]], [t["act"]], name=f"{base}_tanh"),
            ]
        else:
            nodes = [
                node("Mul", [x, const("rsqrt2", 1.0 / math.sqrt(2.0))], [t["inner"]], name=f"{base}_scale"),
                node("Erf", [t["inner"]], [t["act"]], name=f"{base}_erf"),
            ]
        nodes += [
            node("Add", [t["act"], const("one", 1.0)], [t["one_plus"]], name=f"{base}_one_plus"),
            node("Mul", [x, const("half", 0.5)], [t["half_x"]], name=f"{base}_half"),
            node("Mul", [t["half_x"], t["one_plus"]], [n.output[0]], name=base),
        ]
        g.replace_node(n, nodes)
        record.changed += 1
    g.remove_unused()
    return model


@patch("ascend-opset", "convert to the opset range the CANN version parses (onnx.version_converter), "
       "decomposing opset-20 Gelu and, below opset 17, LayerNormalization first")
def convert_opset(model: Any, ctx: PatchContext, record: PatchRecord) -> Any:
    import onnx
    from onnx import version_converter

    current = opset(model)
    target = target_opset(model, ctx)
    if target < 20:
        model = decompose_gelu(model, record)
    if target < 17:
        model = decompose_layernorm(model, record)
    if target == current:
        record.notes.append(f"opset {current} already in range")
        return model
    try:
        converted = version_converter.convert_version(model, target)
        onnx.checker.check_model(converted)
        how = "onnx.version_converter"
    except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError/ValidationError with C++ text
        first = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
        converted = onnx.ModelProto()
        converted.CopyFrom(model)
        problems = relabel(converted, target) if target < current else [first]
        if problems:
            raise CompileError(f"cannot convert the graph from opset {current} to {target} for CANN "
                               f"{ctx.cann}: {first}; relabeling: {'; '.join(problems[:3])}",
                               fix=f"export at opset {target} (vlc export --opset {target}) or choose a "
                                   "newer CANN with -O cann=N") from None
        onnx.checker.check_model(converted)
        how = f"relabeled (the converter failed: {first[:120]})"
    record.changed += 1
    record.notes.append(f"opset {current} -> {target}: {how}")
    return converted


# Operators whose versions from opset 13 to 21 only widened their types or added attributes
# or optional inputs whose absence keeps the old behaviour (checked per node below).
TYPE_ONLY = {
    "Abs", "Add", "And", "ArgMax", "ArgMin", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Cos", "CumSum", "Div", "Dropout", "Equal", "Erf", "Exp", "Expand",
    "Flatten", "Floor", "Gather", "GatherElements", "Gemm", "Greater", "GreaterOrEqual", "Identity",
    "If", "Less", "LessOrEqual", "Log", "MatMul", "Max", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pad",
    "Pow", "Range", "Reciprocal", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Sign", "Sin",
    "Size", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "Transpose",
    "Unsqueeze", "Where", "Xor", "LeakyRelu", "PRelu", "HardSigmoid", "Softplus", "Elu",
    "GlobalAveragePool", "AveragePool", "MaxPool", "Conv", "ConvTranspose", "LogSoftmax", "ReduceSum",
    "TopK", "OneHot", "ScatterND", "ScatterElements", "GatherND", "NonZero", "Einsum",
}
AXES_TO_ATTRIBUTE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                     "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


# GridSample 20 renamed its modes and took N-D inputs; on 4-D inputs it is GridSample 16.
GRIDSAMPLE_16_MODES = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}


def _gridsample_to_16(node: Any, g: Graph) -> str | None:
    """Rename a GridSample 20+ node's mode for opset 16; the problem when it is not 4-D."""
    from onnx import helper

    rank = g.rank(node.input[0])
    if rank is not None and rank != 4:
        return f"GridSample {node.name or node.output[0]} samples a {rank}-D input, which opset 16 lacks"
    for a in node.attribute:
        if a.name == "mode":
            mode = helper.get_attribute_value(a).decode()
            a.s = GRIDSAMPLE_16_MODES.get(mode, mode).encode()
    return None


def relabel(model: Any, target: int) -> list[str]:
    """Lower the opset by relabeling, where every node's older schema means the same thing.

    Returns the problems (empty when the model was relabeled). Reduce* ops of opset 18 get their
    constant `axes` input turned back into the attribute older opsets take.
    """
    from onnx import defs, helper

    current = opset(model)
    g = Graph(model)
    problems = []
    for n in list(model.graph.node):
        if n.domain not in ("", "ai.onnx"):
            continue
        try:
            new = defs.get_schema(n.op_type, current)
            old = defs.get_schema(n.op_type, target)
        except defs.SchemaError:
            problems.append(f"{n.op_type} does not exist at opset {target}")
            continue
        if new.since_version == old.since_version:
            continue
        if n.op_type in AXES_TO_ATTRIBUTE and target < 18 and len(n.input) > 1:
            axes = g.constant(n.input[1]) if n.input[1] else None
            if n.input[1] and axes is None:
                problems.append(f"{n.op_type} {n.name}: axes are not constant")
                continue
            del n.input[1:]
            if axes is not None:
                n.attribute.append(helper.make_attribute("axes", [int(a) for a in axes.reshape(-1)]))
            continue
        if n.op_type in AXES_TO_ATTRIBUTE and target < 18:
            continue
        if n.op_type == "GridSample" and old.since_version == 16:
            problem = _gridsample_to_16(n, g)
            if problem:
                problems.append(problem)
            continue
        if n.op_type not in TYPE_ONLY:
            problems.append(f"{n.op_type} changed between opset {old.since_version} and {new.since_version}")
            continue
        for a in [a for a in n.attribute if a.name not in old.attributes]:
            default = new.attributes[a.name].default_value if a.name in new.attributes else None
            if default is not None and default.type and (
                    helper.get_attribute_value(default) == helper.get_attribute_value(a)):
                n.attribute.remove(a)  # the newer attribute at its default: the old behaviour
            elif n.op_type == "Reshape" and a.name == "allowzero":
                shape = g.constant(n.input[1])
                if shape is not None and not (shape == 0).any():
                    n.attribute.remove(a)  # no 0 in the shape: allowzero changes nothing
        extra = [a.name for a in n.attribute if a.name not in old.attributes]
        if extra or len([i for i in n.input if i]) > len(old.inputs) and not any(
                p.option == p.option.Variadic for p in old.inputs):
            problems.append(f"{n.op_type} {n.name or n.output[0]} uses {extra or 'inputs'} "
                            f"that opset {target} lacks")
    if not problems:
        set_opset(model, target)
        g.remove_unused()
    return problems
