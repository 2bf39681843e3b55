"""Graph rewrites before TensorRT's ONNX parser: forms it rejects, replaced by equivalents.

Each rule is a graph pass (`trt-<rule>`); the pass sets `trt-parser` and `trt-rtx-parser` (the
latter adds nonzero-static) are what the trt and trt-rtx targets run, through vlc's pass runner,
in this order. Each rule targets a cause, not a model:

- average-pool-global: an AveragePool whose window is larger than its input (Caffe/Paddle heads,
  small test configurations of larger nets) pools the whole input in one window. Where that is
  exactly a global average (one output per axis, the window covering the input, padding not
  counted or absent, no dilation) it becomes GlobalAveragePool, which leaves no question of how
  a runtime divides an overhanging window. Shapes come from ONNX shape inference at the min and
  max shapes of the build's optimization profile; the pool must see the same input size at both.
- layernorm-outputs: TensorRT takes LayerNormalization with one output only. Optional Mean /
  InvStdDev outputs nobody reads are dropped; when they are read, the node is decomposed into
  ReduceMean / Sub / Mul / Sqrt / Reciprocal, computed in its stash type as the ONNX function
  does.
- nonzero-static (TensorRT-RTX, which has no NonZero plugin): a NonZero whose input is constant
  once shapes are fixed (a mask computed from shapes) is folded to its constant indices with
  onnxscript's constant folder, at the profile's shapes when min == max. Otherwise its output
  size depends on the data, and the build stops with one line naming the node and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import CompileError
from vlc.frontend.passes import GraphPass, PassRecord, PassSet, run_pass_set
from vlc.spec import ShapeRange

Dims = tuple[int | None, ...]
_EXTERNAL_DATA_BYTES = 1 << 30  # keep weights beside the rewritten graph above 1 GiB (protobuf's 2 GiB cap)


@dataclass
class RewriteReport:
    """What was rewritten, by rule: the names of the nodes replaced."""

    rules: dict[str, list[str]] = field(default_factory=dict)
    graph: str | None = None  # the rewritten graph's file name in the artifact, when anything changed
    passes: list[PassRecord] = field(default_factory=list)  # the pass set's run (timings, node counts)

    @property
    def changed(self) -> bool:
        return any(self.rules.values())

    def summary(self) -> str:
        return "; ".join(f"{rule}: {', '.join(nodes)}" for rule, nodes in self.rules.items()) or "none"

    def to_json(self) -> dict[str, Any]:
        return {"rules": {k: list(v) for k, v in self.rules.items()}, "graph": self.graph}


# ---- shapes ------------------------------------------------------------------------------------

def inferred_shapes(proto: Any, inputs: Mapping[str, Sequence[int]] | None = None) -> dict[str, Dims]:
    """Every top-level value's shape by ONNX shape inference (with data propagation), the graph
    inputs fixed to `inputs` first; None for a dim inference leaves open. The proto is restored."""
    import onnx

    saved: dict[str, list[Any]] = {}
    for vi in proto.graph.input:
        if inputs and vi.name in inputs and vi.type.HasField("tensor_type"):
            dims = vi.type.tensor_type.shape.dim
            saved[vi.name] = [_copy_dim(d) for d in dims]
            del dims[:]
            for size in inputs[vi.name]:
                dims.add().dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort: no shapes means no rewrite
        inferred = proto
    finally:
        for vi in proto.graph.input:
            if vi.name in saved:
                dims = vi.type.tensor_type.shape.dim
                del dims[:]
                dims.extend(saved[vi.name])
    shapes: dict[str, Dims] = {}
    graph = inferred.graph
    for vi in (*graph.input, *graph.value_info, *graph.output):
        tensor = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tensor.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return shapes


def _copy_dim(dim: Any) -> Any:
    import onnx

    copy = onnx.TensorShapeProto.Dimension()
    copy.CopyFrom(dim)
    return copy


def profile_points(profile: Mapping[str, ShapeRange]) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    return {k: r.min for k, r in profile.items()}, {k: r.max for k, r in profile.items()}


def _label(node: Any) -> str:
    """How a message names a node: its name, else the value it produces."""
    return f"node '{node.name}'" if node.name else f"node producing '{node.outputs[0].name}'"


def _node_name(node: Any) -> str:
    """A node's name for the manifest: its own, else its first output's."""
    return str(node.name or node.outputs[0].name or "")


# ---- AveragePool -> GlobalAveragePool ----------------------------------------------------------

def _ints(node: Any, name: str, default: list[int]) -> list[int]:
    attr = node.attributes.get(name)
    return list(attr.value) if attr is not None else default


def _int(node: Any, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


def pool_is_global(node: Any, spatial: Sequence[int]) -> bool:
    """Whether AveragePool `node` over spatial input sizes `spatial` is exactly a global average
    pool whose window exceeds the input (the case rewritten)."""
    rank = len(spatial)
    kernel = _ints(node, "kernel_shape", [])
    if len(kernel) != rank:
        return False
    auto_pad = node.attributes.get("auto_pad")
    auto_pad = auto_pad.value if auto_pad is not None else "NOTSET"
    if auto_pad not in ("NOTSET", "VALID"):
        return False  # SAME_* pads depend on the output size; not worth the special case
    strides = _ints(node, "strides", [1] * rank)
    pads = [0] * (2 * rank) if auto_pad == "VALID" else _ints(node, "pads", [0] * (2 * rank))
    if any(d != 1 for d in _ints(node, "dilations", [1] * rank)):
        return False
    ceil = _int(node, "ceil_mode", 0) == 1
    include_pad = _int(node, "count_include_pad", 0) == 1
    if include_pad and any(pads):
        return False  # the divisor would count padding: not a plain average of the input
    exceeds = False
    for axis, size in enumerate(spatial):
        k, s, begin, end = kernel[axis], strides[axis], pads[axis], pads[axis + rank]
        span = size + begin + end - k
        out = (math.ceil(span / s) if ceil else math.floor(span / s)) + 1
        if out != 1 or k - begin < size:  # one window, and it reaches past the input's end
            return False
        exceeds = exceeds or k > size
    return exceeds


def _rewrite_pools(model: Any, low: Mapping[str, Dims], high: Mapping[str, Dims], report: PassRecord) -> None:
    import onnx_ir as ir

    for node in list(model.graph):  # top level: the shapes are those of the top-level graph
        if node.op_type != "AveragePool" or node.domain not in ("", "ai.onnx"):
            continue
        x = node.inputs[0]
        a, b = (low.get(x.name or ""), high.get(x.name or "")) if x is not None else (None, None)
        if a is None or b is None or len(a) < 3 or a[2:] != b[2:]:
            continue  # spatial size unknown, or not the same over the profile
        spatial = [d for d in a[2:] if d is not None]
        if len(spatial) != len(a) - 2 or not pool_is_global(node, spatial):
            continue
        pooled = ir.node("GlobalAveragePool", [node.inputs[0]], name=node.name)
        ir.convenience.replace_nodes_and_values(model.graph, node, [node], [pooled],
                                                [node.outputs[0]], [pooled.outputs[0]])
        report.add("average-pool-global", _node_name(node))


# ---- LayerNormalization with Mean / InvStdDev ------------------------------------------------

def _used(value: Any) -> bool:
    return value is not None and (bool(value.uses()) or value.is_graph_output())


def _reduce_mean(ir: Any, x: Any, axes: list[int], opset: int, name: str) -> Any:
    if opset >= 18:
        axes_value = ir.Value(name=f"{name}_axes", const_value=ir.tensor(np.array(axes, np.int64)))
        return ir.node("ReduceMean", [x, axes_value], {"keepdims": 1}, name=name), axes_value
    return ir.node("ReduceMean", [x], {"axes": axes, "keepdims": 1}, name=name), None


def _decompose_layernorm(ir: Any, graph: Any, node: Any, rank: int, opset: int) -> None:
    """Mean, InvStdDev and Y of LayerNormalization as the ONNX function computes them (in the
    stash type), with the variance as the mean of squared deviations (the stabler form)."""
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    axis = _int(node, "axis", -1)
    axis = axis + rank if axis < 0 else axis
    axes = list(range(axis, rank))
    epsilon = float(node.attributes["epsilon"].value) if "epsilon" in node.attributes else 1e-5
    stash = _int(node, "stash_type", 1)
    x_type = x.dtype
    stash_type = ir.DataType(stash)
    base = node.name or node.outputs[0].name
    nodes: list[Any] = []
    initializers: list[Any] = []

    def add(n: Any, extra: Any = None) -> Any:
        nodes.append(n)
        if extra is not None:
            initializers.append(extra)
        return n.outputs[0]

    xs = x
    cast_back = x_type is not None and x_type != stash_type
    if cast_back:
        xs = add(ir.node("Cast", [x], {"to": stash_type}, name=f"{base}_to_stash"))
    mean = add(*_reduce_mean(ir, xs, axes, opset, f"{base}_mean"))
    centered = add(ir.node("Sub", [xs, mean], name=f"{base}_centered"))
    squared = add(ir.node("Mul", [centered, centered], name=f"{base}_squared"))
    variance = add(*_reduce_mean(ir, squared, axes, opset, f"{base}_variance"))
    eps = ir.Value(name=f"{base}_epsilon",
                   const_value=ir.tensor(np.array(epsilon, dtype=stash_type.numpy())))
    initializers.append(eps)
    shifted = add(ir.node("Add", [variance, eps], name=f"{base}_shifted"))
    std = add(ir.node("Sqrt", [shifted], name=f"{base}_std"))
    inv_std = add(ir.node("Reciprocal", [std], name=f"{base}_inv_std"))
    normalized = add(ir.node("Mul", [centered, inv_std], name=f"{base}_normalized"))
    if cast_back:
        normalized = add(ir.node("Cast", [normalized], {"to": x_type}, name=f"{base}_to_input_type"))
    y = add(ir.node("Mul", [normalized, scale], name=f"{base}_scaled"))
    if bias is not None:
        y = add(ir.node("Add", [y, bias], name=f"{base}_shifted_output"))
    for value in initializers:
        graph.register_initializer(value)
    old = [v for v in node.outputs]
    new = [y, mean, inv_std][:len(old)]
    keep = [(o, n) for o, n in zip(old, new) if o is not None]
    ir.convenience.replace_nodes_and_values(graph, node, [node], nodes, [o for o, _ in keep], [n for _, n in keep])


def _rewrite_layernorms(model: Any, ranks: Mapping[str, int], report: PassRecord) -> list[str]:
    """Returns the nodes that need decomposing but whose input rank is unknown."""
    import onnx_ir as ir

    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 17))
    unknown: list[str] = []  # labels (see _label)
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx") or len(node.outputs) < 2:
            continue
        label, graph, x = _node_name(node), node.graph, node.inputs[0]
        if graph is None or x is None:
            continue
        if not any(_used(v) for v in node.outputs[1:]):
            single = ir.node("LayerNormalization", list(node.inputs),
                             {k: v for k, v in node.attributes.items()}, name=node.name)
            ir.convenience.replace_nodes_and_values(graph, node, [node], [single],
                                                    [node.outputs[0]], [single.outputs[0]])
            report.add("layernorm-unused-outputs-dropped", label)
            continue
        rank = len(x.shape) if x.shape is not None else ranks.get(x.name or "")
        if rank is None:
            unknown.append(_label(node))
            continue
        _decompose_layernorm(ir, graph, node, rank, opset)
        report.add("layernorm-decomposed", label)
    return unknown


# ---- NonZero -----------------------------------------------------------------------------------

_NONZERO_FIX = ("build with --target trt (TensorRT 10/11 has NonZero natively), or change the model "
                "so that the count is fixed (e.g. torch.where(mask, x, 0) instead of x[mask], or topk "
                "over the mask)")


def _fold_nonzeros(model: Any, graph: Path | Any, profile: Mapping[str, ShapeRange],
                   report: PassRecord) -> None:
    """Replace each NonZero whose input is constant at the profile's shapes with its indices;
    stop with one line at the first one that depends on the data."""
    import onnx_ir as ir
    import onnxscript.optimizer as optimizer

    nodes = [n for n in ir.traversal.RecursiveGraphIterator(model.graph)
             if n.op_type == "NonZero" and n.domain in ("", "ai.onnx")]
    if not nodes:
        return
    static = bool(profile) and all(r.min == r.max for r in profile.values())
    folded = _folded_copy(ir, optimizer, graph, {k: r.min for k, r in profile.items()} if static else None,
                          [str(n.outputs[0].name) for n in nodes if n.graph is model.graph])
    for node in nodes:
        label, owner, source_value = _node_name(node), node.graph, node.inputs[0]
        value = folded.get(str(node.outputs[0].name)) if owner is model.graph else None
        if value is None or owner is None:
            source = source_value.name if source_value is not None else "?"
            why = (f"its input '{source}' depends on the model's inputs" if node.graph is model.graph
                   else "it is inside a control-flow body")
            raise CompileError(f"{_label(node)} (NonZero) has an output whose size depends on the data "
                               f"({why}), and TensorRT-RTX has no NonZero plugin", fix=_NONZERO_FIX)
        const = ir.node("Constant", [], {"value": ir.tensor(value)}, name=node.name)
        ir.convenience.replace_nodes_and_values(owner, node, [node], [const],
                                                [node.outputs[0]], [const.outputs[0]])
        report.add("nonzero-static" + ("-at-profile-shapes" if static else ""), label)


def _folded_copy(ir: Any, optimizer: Any, graph: Path | Any, shapes: Mapping[str, Sequence[int]] | None,
                 wanted: list[str]) -> dict[str, np.ndarray]:
    """The values of `wanted` that onnxscript's constant folder computes, on a second copy of the
    graph (inputs fixed to `shapes` when given, the wanted values made outputs so they stay)."""
    model = ir.load(str(graph)) if isinstance(graph, Path) else ir.from_proto(graph)  # a file, or a proto
    for value in model.graph.inputs:
        if shapes and value.name in shapes:
            value.shape = ir.Shape([int(d) for d in shapes[value.name]])
    by_name = {v.name: v for node in model.graph for v in node.outputs}
    for name in wanted:
        if name in by_name and not by_name[name].is_graph_output():
            model.graph.outputs.append(by_name[name])
    try:
        optimizer.fold_constants(model, onnx_shape_inference=True)
    except Exception:  # noqa: BLE001 - folding is best effort: nothing folded means nothing replaced
        return {}
    found: dict[str, np.ndarray] = {}
    for value in model.graph.outputs:
        if value.name in wanted and (tensor := ir.convenience.get_const_tensor(value)) is not None:
            found[value.name] = tensor.numpy()
    return found


# ---- the pass sets ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ParserContext:
    """What a parser rewrite needs beside the model: the graph's structure (`proto`, loaded
    without weights: ONNX shape inference), its file (`graph`: NonZero folding works on a second
    copy; None folds a copy of `proto`) and the build's profile by ONNX input name."""

    proto: Any
    graph: Path | None
    profile: Mapping[str, ShapeRange]


class ParserRewrite(GraphPass):
    """One rule of the parser rewrites as a graph pass. Run outside a build (vlc export
    --passes), its context is the graph itself with its own shapes and no profile."""

    def __init__(self, name: str, summary: str, looks_at: Callable[[Any, bool], bool],
                 fn: Callable[[Any, ParserContext, PassRecord], None]) -> None:
        super().__init__(name, summary)
        self.looks_at = looks_at  # (NodeProto, at the top level) -> whether the rule reads it
        self.fn = fn

    def context(self, model: Any, given: Any) -> ParserContext:
        if isinstance(given, ParserContext):
            return given
        import onnx_ir as ir

        return ParserContext(ir.to_proto(model), None, {})

    def call(self, model: Any, ctx: ParserContext, record: PassRecord) -> None:
        self.fn(model, ctx, record)


def _pools(model: Any, ctx: ParserContext, record: PassRecord) -> None:
    low_inputs, high_inputs = profile_points(ctx.profile)
    low = inferred_shapes(ctx.proto, low_inputs)
    high = low if low_inputs == high_inputs else inferred_shapes(ctx.proto, high_inputs)
    _rewrite_pools(model, low, high, record)


def _layernorms(model: Any, ctx: ParserContext, record: PassRecord) -> None:
    ranks = {name: len(dims) for name, dims in inferred_shapes(ctx.proto).items()}
    if unknown := _rewrite_layernorms(model, ranks, record):
        raise CompileError(f"{unknown[0]} (LayerNormalization) has Mean/InvStdDev outputs that are "
                           "used, which TensorRT does not take, and the rank of its input is unknown "
                           "so vlc cannot decompose it", fix="export the model with static input ranks, "
                           "or compute mean and variance with ReduceMean in the model")


def _nonzeros(model: Any, ctx: ParserContext, record: PassRecord) -> None:
    _fold_nonzeros(model, ctx.graph if ctx.graph is not None else ctx.proto, ctx.profile, record)


PARSER_REWRITES: tuple[ParserRewrite, ...] = (
    ParserRewrite("trt-average-pool-global", "AveragePool whose one window covers its whole input -> "
                  "GlobalAveragePool", lambda node, top: top and node.op_type == "AveragePool", _pools),
    ParserRewrite("trt-layernorm-outputs", "LayerNormalization's Mean/InvStdDev outputs: dropped when "
                  "unused, else the node decomposed (TensorRT takes one output)",
                  lambda node, top: node.op_type == "LayerNormalization" and len(node.output) > 1,
                  _layernorms),
    ParserRewrite("trt-nonzero-static", "NonZero of an input constant at the profile's shapes -> its "
                  "indices (TensorRT-RTX has no NonZero plugin)",
                  lambda node, top: node.op_type == "NonZero", _nonzeros),
)

PARSER_SET = PassSet("trt-parser", "trt", "rewrites before TensorRT's ONNX parser",
                     ("trt-average-pool-global", "trt-layernorm-outputs"))
RTX_PARSER_SET = PassSet("trt-rtx-parser", "trt-rtx", "rewrites before TensorRT-RTX's ONNX parser",
                         (*PARSER_SET.passes, "trt-nonzero-static"))


# ---- entry point -------------------------------------------------------------------------------

def rules_to_run(proto: Any, pass_set: PassSet) -> list[str]:
    """The passes of `pass_set` with a node to look at, in the set's order (a scan of the graph
    and its subgraphs, no weights)."""
    rules = [p for p in PARSER_REWRITES if p.name in pass_set.passes]
    found: set[str] = set()

    def scan(g: Any, top: bool) -> None:
        for node in g.node:
            if node.domain not in ("", "ai.onnx"):
                continue
            found.update(p.name for p in rules if p.looks_at(node, top))
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    scan(sub, False)

    scan(proto.graph, True)
    return [n for n in pass_set.passes if n in found]


def rewrite_for_parser(graph: Path, out_dir: Path, profile: Mapping[str, ShapeRange], *,
                       rtx: bool) -> tuple[Path, RewriteReport]:
    """The graph TensorRT's parser gets: `graph` itself when no rule applies, else the rewritten
    graph saved in `out_dir` as <stem>.trt.onnx. `profile`: the build's shape ranges by ONNX
    input name. `rtx`: TensorRT-RTX (its pass set adds the NonZero rule). Only the passes that
    have a node to look at run, so shape inference runs only for them."""
    import onnx
    import onnx_ir as ir

    report = RewriteReport()
    proto = onnx.load(str(graph), load_external_data=False)  # structure and shapes only
    pass_set = RTX_PARSER_SET if rtx else PARSER_SET
    names = rules_to_run(proto, pass_set)
    if not names:
        return graph, report
    model, report.passes = run_pass_set(ir.load(str(graph)), pass_set, ParserContext(proto, graph, profile),
                                        only=names)
    for record in report.passes:
        for rule, nodes in record.sites.items():
            report.rules.setdefault(rule, []).extend(nodes)
    if not report.changed:
        return graph, report
    out = out_dir / f"{graph.stem}.trt.onnx"
    weights = sum(t.const_value.nbytes for t in model.graph.initializers.values() if t.const_value is not None)
    if weights > _EXTERNAL_DATA_BYTES:
        ir.save(model, out, external_data=out.name + ".data")
    else:
        ir.save(model, out)
    report.graph = out.name
    return out, report


def register_passes(register: Callable[[GraphPass], None]) -> None:
    for graph_pass in PARSER_REWRITES:
        register(graph_pass)


def register_pass_sets(register: Callable[[PassSet], None]) -> None:
    register(PARSER_SET)
    register(RTX_PARSER_SET)
