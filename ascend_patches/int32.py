"""ascend-int64-to-int32: index arithmetic in int32 instead of int64.

Ascend's AI Core runs most integer arithmetic in int32 only; int64 index math falls back to
the AI CPU or fails (E89999, e.g. int64 vs int32 TopK indices). This patch finds groups of
int64 tensors that are computed together (Add, Mul, Where, Concat, Gather data, CumSum, ...)
and end in consumers that accept int32 (Gather/GatherElements/OneHot indices, comparisons,
Cast), and moves each whole group to int32:
- int64 initializers and Constants become int32 (a group with values outside the int32 range
  is left alone, so numerics are kept exactly);
- Cast(to=int64) becomes Cast(to=int32);
- Shape, ArgMax/ArgMin, TopK indices, NonZero and int64 graph inputs get a Cast to int32
  after them (only when the group also has arithmetic to move, so no lone casts are added).
Tensors that must stay int64 by the ONNX spec (Reshape/Expand/Slice/Tile shape and index
inputs, axes inputs, ScatterND indices) and graph outputs keep their type, and with them
the group they belong to.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlc.ascend_patches.core import PatchContext, PatchRecord, patch
from vlc.ascend_patches.graph import INT32_MAX, INT32_MIN, Graph, infer_shapes, node, value_types

INT64, INT32 = 7, 6
ALL = -1  # every input position

# op -> (input positions that share one type with the outputs, whether outputs are included)
LINKED: dict[str, tuple[tuple[int, ...], bool]] = {
    **{op: ((ALL,), True) for op in ("Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Concat", "Sum")},
    **{op: ((0,), True) for op in ("Neg", "Abs", "Sign", "Identity", "Expand", "Tile", "Reshape",
                                  "Squeeze", "Unsqueeze", "Slice", "Transpose", "Flatten", "Gather",
                                  "GatherElements", "CumSum", "ReduceSum", "ReduceMax", "ReduceMin",
                                  "Split")},
    "Where": ((1, 2), True),
    "Clip": ((0, 1, 2), True),
    "Range": ((0, 1, 2), True),
}
# op -> groups of input positions that accept int32 (linked among themselves, not to outputs)
SINKS: dict[str, tuple[tuple[int, ...], ...]] = {
    "Gather": ((1,),), "GatherElements": ((1,),), "OneHot": ((0,),), "Cast": ((0,),),
    "Shape": ((0,),), "Size": ((0,),),
    "CumSum": ((1,),),
    **{op: ((0, 1),) for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")},
}
# op -> output positions that are int64 by definition and can be followed by a Cast
CAST_AFTER: dict[str, tuple[int, ...]] = {"Shape": (0,), "ArgMax": (0,), "ArgMin": (0,),
                                           "TopK": (1,), "NonZero": (0,), "Size": (0,)}
ARITHMETIC = {"Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Sum", "Neg", "Abs", "Sign",
              "CumSum", "ReduceSum", "ReduceMax", "ReduceMin", "Where", "Clip", "Range"}


class _Groups:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, names: list[str]) -> None:
        for other in names[1:]:
            self.parent[self.find(other)] = self.find(names[0])


def _subgraph_names(model: Any) -> set[str]:
    names: set[str] = set()

    def visit(graph: Any) -> None:
        for n in graph.node:
            names.update(n.input)
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    visit(sub)

    for n in model.graph.node:
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                visit(sub)
    return names


def int64_groups(model: Any) -> tuple[dict[str, list[str]], set[str], dict[str, bool]]:
    """Groups of int64 tensors (root -> members), the members that must stay int64, and
    whether each group holds arithmetic."""
    typed = infer_shapes(model)
    types = value_types(typed)
    g = Graph(model)

    def is64(name: str) -> bool:
        return bool(name) and types.get(name, (None,))[0] == INT64

    groups = _Groups()
    bad: set[str] = set(o.name for o in model.graph.output) | _subgraph_names(model)
    arithmetic: set[str] = set()
    for n in model.graph.node:
        op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        covered: set[int] = set()
        linked = LINKED.get(op)
        if linked:
            positions, with_outputs = linked
            idx = range(len(n.input)) if positions == (ALL,) else [i for i in positions if i < len(n.input)]
            names = [n.input[i] for i in idx if is64(n.input[i])]
            covered.update(idx)
            if with_outputs:
                names += [o for o in n.output if is64(o)]
            if names:
                groups.union(names)
                if op in ARITHMETIC:
                    arithmetic.add(names[0])
        for sink in SINKS.get(op, ()):
            names = [n.input[i] for i in sink if i < len(n.input) and is64(n.input[i])]
            covered.update(sink)
            if names:
                groups.union(names)
        for i, name in enumerate(n.input):
            if is64(name):
                groups.find(name)
                if i not in covered:
                    bad.add(name)
        for k, out in enumerate(n.output):
            if not is64(out):
                continue
            groups.find(out)
            source = (op in ("Constant", "ConstantOfShape") or (op == "Cast")
                      or k in CAST_AFTER.get(op, ()) or (linked is not None and linked[1]))
            if not source:
                bad.add(out)
    for value in model.graph.input:
        if is64(value.name):
            groups.find(value.name)
    for init in model.graph.initializer:
        if init.data_type == INT64:
            groups.find(init.name)
            from onnx import numpy_helper

            array = numpy_helper.to_array(init)
            if array.size and (array.min() < INT32_MIN or array.max() > INT32_MAX):
                bad.add(init.name)
    for n in model.graph.node:
        if n.op_type == "Constant":
            value = g.constant(n.output[0])
            if value is not None and value.dtype == np.int64 and value.size and (
                    value.min() < INT32_MIN or value.max() > INT32_MAX):
                bad.add(n.output[0])
    members: dict[str, list[str]] = {}
    for name in list(groups.parent):
        members.setdefault(groups.find(name), []).append(name)
    has_math = {root: any(groups.find(a) == root for a in arithmetic) for root in members}
    return members, bad, has_math


@patch("ascend-int64-to-int32", "int64 index arithmetic -> int32 (Cast, Constant, Shape/ArgMax "
       "outputs, initializers within range), where every consumer accepts int32")
def int64_to_int32(model: Any, ctx: PatchContext, record: PatchRecord) -> Any:
    from onnx import helper, numpy_helper

    members, bad, has_math = int64_groups(model)
    g = Graph(model)
    producers = g.producers()
    inputs = {v.name for v in model.graph.input}
    inits = {i.name: i for i in model.graph.initializer}
    for root, names in members.items():
        if any(name in bad for name in names):
            continue
        needs_cast = [n for n in names if n in inputs and n not in inits
                      or (n in producers and producers[n].op_type in CAST_AFTER)]
        if needs_cast and not has_math[root]:
            continue
        if not has_math[root] and not any(n in inits or (n in producers and producers[n].op_type in
                                                         ("Constant", "ConstantOfShape", "Cast"))
                                          for n in names):
            continue
        for name in names:
            if name in inits:
                init = inits[name]
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.int32), name))
                continue
            producer = producers.get(name)
            if name in needs_cast:
                cast_out = g.fresh(f"{name}_int32")
                cast = node("Cast", [name], [cast_out], name=f"{cast_out}_cast", to=INT32)
                index = 0 if producer is None else list(model.graph.node).index(producer) + 1
                model.graph.node.insert(index, cast)
                # protobuf copies on insert: skip the element in the graph, not `cast`
                g.rename_input_uses(name, cast_out, skip=model.graph.node[index])
            elif producer is not None and producer.op_type == "Cast":
                for a in producer.attribute:
                    if a.name == "to":
                        a.i = INT32
            elif producer is not None and producer.op_type in ("Constant", "ConstantOfShape"):
                for a in producer.attribute:
                    if a.name == "value" and a.HasField("t"):
                        a.t.CopyFrom(numpy_helper.from_array(
                            numpy_helper.to_array(a.t).astype(np.int32), a.t.name))
                    elif a.name in ("value_int", "value_ints"):
                        array = np.array(helper.get_attribute_value(a), dtype=np.int32)
                        a.CopyFrom(helper.make_attribute("value", numpy_helper.from_array(array)))
        record.changed += 1
        record.notes.append(f"{len(names)} tensors: {', '.join(sorted(names)[:4])}"
                            + (" ..." if len(names) > 4 else ""))
    if record.changed:
        del model.graph.value_info[:]
    return model
