"""fp16 / bf16 conversion with fp32 islands, on the ONNX protobuf.

Every float32 node runs in the low-precision type except ops whose fp16 arithmetic overflows
or loses too much (normalizations, Softmax, sum-like reductions, Pow, Exp/Log) and decomposed
LayerNorm / RMSNorm patterns (ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div),
which stay fp32. Graph inputs and outputs stay fp32; Casts are inserted where a tensor crosses
between the two regions, once per tensor and direction. Constants are converted ahead of time
(no runtime Cast); for fp16, values beyond +-65504 (e.g. -3.4e38 attention-mask fills) are
clamped to +-65504 and tiny non-zero values raised to the smallest subnormal.

Nodes carrying subgraphs (If/Loop/Scan) stay fp32, and so do tensors their bodies read. Nodes
can also be kept by name (`keep_nodes`: what islands=auto chose, islands.py). For fp16, what reads
an fp32 sum, product, power or exponential next through elementwise ops (ReduceSum -> Add(eps) ->
Sqrt -> Div) stays fp32 too: casting that tensor to fp16 would turn 7e4 into inf.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP16_MAX = 65504.0
FP16_TINY = 2.0 ** -24  # smallest positive subnormal
BF16_MAX = 3.3895313892515355e38  # float32's extremes (-3.4028e38 mask fills) round to -inf in bf16

# Ops kept in fp32 for their numerics: overflow- or precision-sensitive arithmetic. These are the
# static islands that `islands=auto` (islands.py) starts from and releases where accuracy allows.
SENSITIVE_FP32_OPS: frozenset[str] = frozenset({
    # normalizations (the native LayerNormalization layer in TensorRT computes in fp32 anyway)
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "LpNormalization",
    "MeanVarianceNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
    # softmax family and sum-like reductions (ReduceMax/Min are exact in fp16 and stay low)
    "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "CumSum",
    # powers, exponentials, logarithms
    "Pow", "Exp", "Log", "Softplus",
})

# Ops whose float types are fixed by attributes or other inputs: left as they are, always.
TYPE_FIXED_OPS: frozenset[str] = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "RandomNormal", "RandomUniform",
    "RandomNormalLike", "RandomUniformLike", "Multinomial", "EyeLike", "NonMaxSuppression",
    "RoiAlign", "STFT", "DFT", "Range",
})

# The default fp32 op set: both of the above.
KEEP_FP32_OPS: frozenset[str] = SENSITIVE_FP32_OPS | TYPE_FIXED_OPS

# fp16 range: ops kept in fp32 whose outputs can exceed +-65504 (sums, products, powers, exp) ...
WIDE_OPS = frozenset({"ReduceSum", "ReduceSumSquare", "ReduceProd", "ReduceL1", "CumSum", "Exp", "Pow"})
# ... pass that range on through these ops (elementwise arithmetic, mean/max reductions, data
# movement), so such a consumer of a wide fp32 tensor stays in fp32 too rather than casting the
# tensor to fp16 first (ReduceSum -> Add(eps) would turn 7e4 into inf); Div by a wide tensor and
# Reciprocal bring values back into range and end the chain.
RANGE_CARRY_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Sqrt", "Reciprocal", "Abs", "Neg", "Max", "Min", "Clip", "Sum",
    "Mean", "Relu", "ReduceMean", "ReduceMax", "ReduceMin", "Reshape", "Unsqueeze", "Squeeze",
    "Transpose", "Expand", "Flatten", "Identity", "Cast",
})

# Inputs that must stay float32 whatever the node's precision (e.g. Resize scales).
FIXED_FP32_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({2}), "Upsample": frozenset({1})}

# Ops whose float input type is independent of the output type: never cast their inputs.
TYPE_FREE_INPUT_OPS = frozenset({"Cast", "Shape", "Size"})

FLOAT = TensorProto.FLOAT


@dataclass
class LowPrecisionStats:
    nodes_total: int = 0
    nodes_low: int = 0
    fp32_ops: Counter = field(default_factory=Counter)
    layernorm_islands: int = 0
    casts_inserted: int = 0
    clamped: int = 0
    clamped_names: list[str] = field(default_factory=list)
    flushed: int = 0
    # why each node stayed fp32, by node name: op (its type is in keep_ops), layernorm (a
    # decomposed LayerNorm/RMSNorm island), node (named in keep_nodes), range (reads a tensor
    # beyond fp16's range), subgraph, domain (a custom operator), cast (feeds only fp32 work)
    fp32_nodes: dict[str, str] = field(default_factory=dict)
    # the decomposed LayerNorm/RMSNorm islands found, as lists of node names
    island_nodes: list[list[str]] = field(default_factory=list)
    # every tensor of the converted graph held in the low-precision type (for check.emulate_low_precision)
    low_tensors: set[str] = field(default_factory=set)


@dataclass
class ConversionCache:
    """What repeated conversions of one source graph share (islands=auto converts it many times)."""

    types: dict[str, int] | None = None
    tensors: dict[str, tuple[onnx.TensorProto, int, int]] = field(default_factory=dict)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor the graph names, after shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - a graph the inferencer rejects keeps its own annotations
        inferred = model
    types: dict[str, int] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    types[node.output[0]] = attr.t.data_type
                elif attr.name in ("value_float", "value_floats"):
                    types[node.output[0]] = FLOAT
    return types


def _subgraph_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a subgraph body reads (outer-scope names among them)."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                for inner in sub.node:
                    names.update(inner.input)
                names |= _subgraph_names(sub)
    return names


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Turn top-level Constant nodes with a tensor or float value into initializers."""
    keep = []
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(attrs) == 1:
            if "value" in attrs and attrs["value"].type == onnx.AttributeProto.TENSOR:
                tensor = onnx.TensorProto()
                tensor.CopyFrom(attrs["value"].t)
            elif "value_float" in attrs:
                tensor = numpy_helper.from_array(np.asarray(attrs["value_float"].f, np.float32))
            elif "value_floats" in attrs:
                tensor = numpy_helper.from_array(np.asarray(list(attrs["value_floats"].floats), np.float32))
            else:
                keep.append(node)
                continue
            if tensor.data_location == TensorProto.EXTERNAL:
                keep.append(node)
                continue
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _layernorm_islands(nodes: list[onnx.NodeProto], producer: dict[str, onnx.NodeProto],
                       consumers: dict[str, list[onnx.NodeProto]],
                       constants: set[str]) -> list[set[int]]:
    """Decomposed LayerNorm/RMSNorm patterns as sets of node ids, ending at the normalizing Div/Mul."""

    def prod(name: str, *ops: str) -> onnx.NodeProto | None:
        node = producer.get(name)
        return node if node is not None and node.op_type in ops else None

    islands = []
    for sqrt in nodes:
        if sqrt.op_type != "Sqrt":
            continue
        add = prod(sqrt.input[0], "Add")
        if add is None:
            continue
        var_in = [i for i in add.input if i not in constants]
        var = prod(var_in[0], "ReduceMean") if len(var_in) == 1 else None
        if var is None:
            continue
        square = prod(var.input[0], "Pow", "Mul")
        if square is None or (square.op_type == "Mul" and square.input[0] != square.input[1]):
            continue
        island = {id(sqrt), id(add), id(var), id(square)}
        centered = square.input[0]
        sub = prod(centered, "Sub")
        if sub is not None and (mean := prod(sub.input[1], "ReduceMean")) is not None \
                and mean.input[0] == sub.input[0]:
            island |= {id(sub), id(mean)}
        normalized = []
        for user in consumers.get(sqrt.output[0], []):
            if user.op_type == "Div" and user.input[1] == sqrt.output[0]:
                normalized.append(user)
            elif user.op_type == "Reciprocal":
                island.add(id(user))
                normalized += [m for m in consumers.get(user.output[0], []) if m.op_type == "Mul"]
        for node in normalized:  # the normalizing op, then the affine Mul(gamma) / Add(beta)
            island.add(id(node))
            for op in ("Mul", "Add"):
                users = consumers.get(node.output[0], [])
                if len(users) != 1 or users[0].op_type != op or not any(i in constants for i in users[0].input):
                    break
                node = users[0]
                island.add(id(node))
        islands.append(island)
    return islands


def _convert_array(array: np.ndarray, low: int, name: str, stats: LowPrecisionStats) -> np.ndarray:
    """Values beyond the type's finite range are clamped to it (a -3.4e38 mask fill would become
    -inf, and 0 * -inf is NaN); for fp16, tiny non-zero values become the smallest subnormal."""
    array = array.astype(np.float32)
    limit = FP16_MAX if low == TensorProto.FLOAT16 else BF16_MAX
    over = np.isfinite(array) & (np.abs(array) > limit)
    if n := int(np.count_nonzero(over)):
        stats.clamped += n
        if len(stats.clamped_names) < 20:
            stats.clamped_names.append(name)
    array = np.where(over, np.sign(array) * limit, array)
    if low == TensorProto.FLOAT16:
        tiny = (array != 0) & (np.abs(array) < FP16_TINY)
        stats.flushed += int(np.count_nonzero(tiny))
        return np.where(tiny, np.sign(array) * FP16_TINY, array).astype(np.float16)
    import ml_dtypes

    return array.astype(ml_dtypes.bfloat16)


def _convert_tensor(tensor: onnx.TensorProto, low: int, name: str, stats: LowPrecisionStats,
                    reuse: ConversionCache | None = None) -> onnx.TensorProto:
    if reuse is None:
        return numpy_helper.from_array(_convert_array(numpy_helper.to_array(tensor), low, name, stats), tensor.name)
    if name not in reuse.tensors:
        alone = LowPrecisionStats()
        converted = numpy_helper.from_array(_convert_array(numpy_helper.to_array(tensor), low, name, alone),
                                            tensor.name)
        reuse.tensors[name] = (converted, alone.clamped, alone.flushed)
    converted, clamped, flushed = reuse.tensors[name]
    stats.clamped += clamped
    stats.flushed += flushed
    if clamped and len(stats.clamped_names) < 20:
        stats.clamped_names.append(name)
    out = onnx.TensorProto()
    out.CopyFrom(converted)
    return out


def _decide(nodes: list[onnx.NodeProto], consumers: dict[str, list[onnx.NodeProto]],
            islands: list[set[int]], pinned: set[str], is_f32, low: int,
            keep_ops: frozenset[str], keep_nodes: frozenset[str], stats: LowPrecisionStats) -> set[int]:
    """Each float node's precision: the ids of the nodes that run in `low` (the rest stay fp32)."""
    island_ids: set[int] = set().union(*islands)
    reason: dict[int, str] = {}
    floating = [n for n in nodes if any(is_f32(t) for t in list(n.input) + list(n.output))]
    for n in floating:
        if n.op_type == "Cast":
            continue  # decided last, from its readers
        if _has_subgraph(n):
            reason[id(n)] = "subgraph"
        elif n.domain not in ("", "ai.onnx"):
            reason[id(n)] = "domain"
        elif n.op_type in keep_ops:
            reason[id(n)] = "op"
        elif id(n) in island_ids:
            reason[id(n)] = "layernorm"
        elif n.name and n.name in keep_nodes:
            reason[id(n)] = "node"
    if low == TensorProto.FLOAT16:  # bf16 has float32's range
        wide: set[str] = set()
        for n in floating:
            reads_wide = [i in wide and is_f32(i) for i in n.input]
            if id(n) in reason:
                if n.op_type in WIDE_OPS:
                    wide.update(o for o in n.output if o)
                elif not any(reads_wide) or n.op_type not in RANGE_CARRY_OPS:
                    continue
            elif not any(reads_wide) or n.op_type not in RANGE_CARRY_OPS:
                continue
            elif n.op_type != "Cast":
                reason[id(n)] = "range"
            narrows = n.op_type == "Reciprocal" or (n.op_type == "Div" and reads_wide[1:2] == [True])
            if not narrows:
                wide.update(o for o in n.output if o)
    low_nodes: set[int] = set()
    for n in floating:
        if n.op_type == "Cast":
            to = helper.get_attribute_value(next(a for a in n.attribute if a.name == "to"))
            users = consumers.get(n.output[0], [])
            # a Cast to float feeds low-precision work unless only fp32 nodes / outputs read it
            if to != FLOAT or n.output[0] in pinned or not users or all(id(u) in reason for u in users):
                reason[id(n)] = "cast"
        stats.nodes_total += 1
        if id(n) in reason:
            stats.fp32_ops[n.op_type] += 1
            if n.name:
                stats.fp32_nodes[n.name] = reason[id(n)]
        else:
            low_nodes.add(id(n))
            stats.nodes_low += 1
    return low_nodes


def to_low_precision(model: onnx.ModelProto, low: int, keep_ops: frozenset[str] = KEEP_FP32_OPS, *,
                     keep_nodes: Iterable[str] = (), layernorm_islands: bool = True,
                     reuse: ConversionCache | None = None) -> tuple[onnx.ModelProto, LowPrecisionStats]:
    """Return a converted copy of `model` (float32 -> `low`, TensorProto.FLOAT16 or BFLOAT16).

    Nodes stay fp32 when their op type is in `keep_ops`, their name is in `keep_nodes`, they
    belong to a decomposed LayerNorm/RMSNorm pattern (unless `layernorm_islands` is False), or
    for structural reasons (subgraphs, custom domains); for fp16, consumers of an fp32 sum,
    product, power or exponential that would carry it past +-65504 follow it into fp32.

    `reuse` (one ConversionCache per source graph) keeps what does not depend on the node choice
    (the source's element types, converted constants) between conversions of the same `model`."""
    if low not in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
        raise ValueError(f"low-precision type must be FLOAT16 or BFLOAT16, got {low}")
    types = reuse.types if reuse is not None and reuse.types is not None else _elem_types(model)
    if reuse is not None:
        reuse.types = types
    model = onnx.ModelProto.FromString(model.SerializeToString())  # edit a copy
    g = model.graph
    _constants_to_initializers(g)
    stats = LowPrecisionStats()
    nodes = list(g.node)
    producer = {o: n for n in nodes for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in nodes:
        for i in n.input:
            if i:
                consumers[i].append(n)
    inits = {t.name: t for t in g.initializer}
    constants = set(inits)
    graph_inputs = {v.name for v in g.input}
    graph_outputs = {v.name for v in g.output}
    pinned = graph_outputs | _subgraph_names(g)  # must keep the fp32 type under their own name

    def is_f32(name: str) -> bool:
        return bool(name) and types.get(name) == FLOAT

    # 1. decide each node's precision
    islands = _layernorm_islands(nodes, producer, consumers, constants) if layernorm_islands else []
    stats.layernorm_islands = len(islands)
    position = {id(n): k for k, n in enumerate(nodes)}
    stats.island_nodes = [[nodes[position[i]].name for i in sorted(island, key=position.__getitem__)]
                          for island in islands]
    low_nodes = _decide(nodes, consumers, islands, pinned, is_f32, low, frozenset(keep_ops),
                        frozenset(keep_nodes), stats)

    # 2. where each float32 tensor lives after conversion ("home" type)
    home: dict[str, int] = {}
    for name, t in types.items():
        if t != FLOAT:
            continue
        p = producer.get(name)
        home[name] = low if p is not None and id(p) in low_nodes else FLOAT

    # graph outputs / subgraph-read tensors produced in low precision: rename the low version
    renamed: dict[str, str] = {}
    for name in sorted(pinned):
        p = producer.get(name)
        if p is not None and id(p) in low_nodes and home.get(name) == low:
            renamed[name] = f"{name}__lowp"
            home[renamed[name]] = low
            home[name] = FLOAT

    # 3. constants used by low-precision nodes get a converted copy (or are converted in place)
    def required(node: onnx.NodeProto, index: int) -> int | None:
        if node.op_type in TYPE_FREE_INPUT_OPS:
            return None
        if id(node) in low_nodes and index not in FIXED_FP32_INPUTS.get(node.op_type, ()):
            return low
        return FLOAT

    new_inits: list[onnx.TensorProto] = []
    converted_init: dict[str, str] = {}
    for name, init in inits.items():
        if init.data_type != FLOAT:
            continue
        needs = {required(u, i) for u in consumers.get(name, []) for i, x in enumerate(u.input) if x == name}
        if low in needs:
            conv = _convert_tensor(init, low, name, stats, reuse)
            if needs == {low} and name not in graph_inputs and name not in pinned:
                init.CopyFrom(conv)
                home[name] = low
            else:
                conv.name = f"{name}__lowp"
                new_inits.append(conv)
                converted_init[name] = conv.name
                home[conv.name] = low
    g.initializer.extend(new_inits)

    # ConstantOfShape in low precision carries its fill value as an attribute
    for n in nodes:
        if id(n) not in low_nodes or n.op_type != "ConstantOfShape":
            continue
        for attr in n.attribute:
            if attr.name == "value" and attr.t.data_type == FLOAT:
                attr.t.CopyFrom(_convert_tensor(attr.t, low, n.output[0], stats))
        if not any(a.name == "value" for a in n.attribute):
            n.attribute.append(helper.make_attribute(
                "value", numpy_helper.from_array(_convert_array(np.zeros(1, np.float32), low, "", stats))))

    # 4. rebuild the node list with casts at region crossings
    cast_cache: dict[tuple[str, int], str] = {}
    pending: dict[str, list[onnx.NodeProto]] = defaultdict(list)  # producer output -> casts after it
    head: list[onnx.NodeProto] = []

    def converted(name: str, want: int) -> str:
        if name in converted_init and want == low:
            return converted_init[name]
        have = home.get(name)
        if have is None or have == want:
            return name
        key = (name, want)
        if key not in cast_cache:
            suffix = "fp32" if want == FLOAT else "lowp"
            out = f"{name}__to_{suffix}"
            cast = helper.make_node("Cast", [name], [out], to=want, name=f"{name}__cast_{suffix}")
            stats.casts_inserted += 1
            home[out] = want
            cast_cache[key] = out
            src = producer.get(name)
            (pending[name] if src is not None else head).append(cast)
        return cast_cache[key]

    body: list[onnx.NodeProto] = []
    for n in nodes:
        for i, name in enumerate(n.input):
            want = required(n, i) if name else None
            if want is None:
                continue
            if name in renamed:  # a pinned tensor: low readers take the low original
                if want == low:
                    n.input[i] = renamed[name]
                continue
            n.input[i] = converted(name, want)
        if id(n) in low_nodes and n.op_type == "Cast":
            for attr in n.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = low
        for j, out in enumerate(n.output):
            if out in renamed:
                n.output[j] = renamed[out]
        body.append(n)
    original_of = {v: k for k, v in renamed.items()}
    final: list[onnx.NodeProto] = list(head)
    for n in body:
        final.append(n)
        for out in n.output:
            original = original_of.get(out, out)
            if out != original:
                final.append(helper.make_node("Cast", [out], [original], to=FLOAT, name=f"{original}__cast_out"))
                stats.casts_inserted += 1
            final.extend(pending.get(original, []))
    del g.node[:]
    g.node.extend(final)

    # 5. value_info: keep shapes, update float types to where the tensor now lives
    for vi in g.value_info:
        if vi.type.tensor_type.elem_type == FLOAT and home.get(vi.name) == low:
            vi.type.tensor_type.elem_type = low
    stats.low_tensors = {n for n, t in home.items() if t == low} | {n for n, t in types.items() if t == low}
    return model, stats
