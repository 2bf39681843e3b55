"""Input specs for a bare ONNX file, derived from what its graph does with each input.

A model file gives only dtypes and shapes. Generic values (normal floats, integers in [0, 2),
every dynamic dim the size of the batch) index past embedding tables, hand a shape input an
impossible shape, take the wrong branch of an If on a sample rate, mask every token, or leave a
detector's probability map empty. So each input gets candidates from its consumers, and the
first set of candidates under which the graph runs in ONNX Runtime with spread in every float
output wins:

- integer indices of a Gather on a constant table: [0, table size);
- an input compared with constants (Equal, Less, ...): each of those constants;
- an input used as a shape, repeats, axes, pads, K or sizes: ones, then zeros;
- a Resize scales input: 1 on every axis but the last two, which get 2, then ones;
- an input named like a mask: ones with the last position of each row masked;
- float data: normal(0, 1), then uniform [0, 1) (images), then normal(0, 4) (past thresholds);
- dynamic dims off the batch axis: the first size the graph runs with (vlc.shape_choice's
  candidates), kept in the specs so every later step generates inputs of that size.

The result (specs, how they were found, what was tried) goes into the normalized graph's
metadata, so the precision checks, `vlc run`, `compare` and `bench` all use the same inputs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlc.accuracy import no_spread
from vlc.errors import first_line
from vlc.model import BATCH, InputSpec
from vlc.shape_choice import TrialRunner, dim_slots, size_trials
from vlc.shape_choice import batch_dim_names as _batch_names
from vlc.signature import Signature, TensorSig

# Ops a value passes through unchanged in meaning (an index stays an index).
PASS_THROUGH = {"Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose",
                "CastLike"}
# (op, input index) that take a shape-like integer tensor.
SHAPE_INPUTS = {("Expand", 1), ("Reshape", 1), ("Tile", 1), ("ConstantOfShape", 0), ("Resize", 3),
                ("Range", 0), ("Range", 1), ("Range", 2), ("Slice", 1), ("Slice", 2), ("Slice", 3),
                ("Slice", 4), ("Pad", 1), ("TopK", 1), ("OneHot", 1), ("Split", 1), ("Squeeze", 1),
                ("Unsqueeze", 1), ("ReduceSum", 1), ("ReduceMean", 1), ("ReduceMax", 1), ("Upsample", 1),
                ("Resize", 2)}
COMPARISONS = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"}
MAX_TRIALS = 48
MAX_SECONDS = 60.0


@dataclass
class DerivedInputs:
    """What the derivation chose, and how (the front end's report and the graph's metadata)."""

    specs: list[InputSpec]
    how: str
    reasons: dict[str, str] = field(default_factory=dict)  # input -> why its values are what they are
    sizes: dict[str, int] = field(default_factory=dict)  # dynamic dim name -> size chosen
    spread: bool = True  # every float output had spread on the chosen inputs
    runs: bool = True  # the graph ran on them

    def to_json(self) -> dict[str, Any]:
        return {"how": self.how, "reasons": self.reasons, "sizes": self.sizes, "spread": self.spread,
                "runs": self.runs, "specs": [s.to_json() for s in self.specs]}


# --------------------------------------------------------------------------- graph analysis

def _all_nodes(graph: Any) -> Iterator[Any]:
    """Every node, in subgraphs too (an If branch reads outer names by name)."""
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


class _Graph:
    def __init__(self, model: Any):
        from onnx import numpy_helper

        self.consumers: dict[str, list[tuple[Any, int]]] = {}
        self.constants: dict[str, np.ndarray | None] = {}  # name -> value (None: too big to read)
        self.shapes: dict[str, tuple[int, ...]] = {}
        for init in model.graph.initializer:
            self.shapes[init.name] = tuple(init.dims)
            small = init.data_location != 1 and int(np.prod(init.dims or [1])) <= 64
            self.constants[init.name] = numpy_helper.to_array(init) if small else None
        for node in _all_nodes(model.graph):
            for index, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, index))
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        self.shapes[node.output[0]] = tuple(attr.t.dims)
                        self.constants[node.output[0]] = numpy_helper.to_array(attr.t)

    def uses(self, name: str, depth: int = 0) -> Iterator[tuple[Any, int]]:
        """(node, input index) consuming `name`, through pass-through ops."""
        for node, index in self.consumers.get(name, ()):
            if node.op_type in PASS_THROUGH and index == 0 and depth < 6:
                for out in node.output:
                    yield from self.uses(out, depth + 1)
            else:
                yield node, index

    def table_size(self, node: Any) -> int | None:
        """The size of a Gather's constant data along its axis."""
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        shape = self.shapes.get(node.input[0])
        if shape is None or not shape:
            return None
        return int(shape[axis if axis >= 0 else axis + len(shape)])

    def compared_constants(self, node: Any, index: int) -> list[float]:
        other = node.input[1 - index] if len(node.input) == 2 else ""
        value = self.constants.get(other)
        if value is None or value.size > 4:
            return []
        return [v.item() for v in np.unique(value.ravel())]


def _candidates(sig: TensorSig, graph: _Graph, shape: tuple[Any, ...]) -> tuple[list[InputSpec], str]:
    """Candidate specs for one input, best first, and the reason for the first."""
    name, dtype = sig.name, sig.dtype
    uses = list(graph.uses(name))
    is_int = dtype not in ("float32", "float16", "float64", "bfloat16", "bool")
    spec = lambda kind, low=0.0, high=1.0: InputSpec(name, shape, dtype, kind, low, high)  # noqa: E731
    if "mask" in name.lower():
        return [spec("mask"), spec("fill", 1.0)], "named a mask: ones, the last position of each row masked"
    if dtype == "bool":
        return [spec("bool"), spec("fill", 1.0), spec("fill", 0.0)], "random booleans"
    tables = [size for node, index in uses if node.op_type == "Gather" and index == 1
              for size in [graph.table_size(node)] if size]
    if is_int and tables:
        return [spec("int", 0, min(tables)), spec("fill", 0.0)], f"indices into a table of {min(tables)}"
    compared = sorted({v for node, index in uses if node.op_type in COMPARISONS
                       for v in graph.compared_constants(node, index)})
    if compared:
        first = [spec("fill", float(v)) for v in compared]
        rest = [spec("int", 0, 2)] if is_int else [spec("normal", 0.0, 1.0)]
        return first + rest, f"compared with {', '.join(f'{v:g}' for v in compared)} in the graph"
    shapes = [(node.op_type, index) for node, index in uses if (node.op_type, index) in SHAPE_INPUTS]
    if shapes:
        op = shapes[0][0]
        if not is_int and op in ("Resize", "Upsample"):
            return [spec("scales", 1.0, 2.0), spec("fill", 1.0)], f"{op} scales: 2 on the last two axes"
        return [spec("fill", 1.0), spec("fill", 0.0), spec("int", 0, 2)], f"a {op} operand: ones"
    if is_int:
        return [spec("int", 0, 2), spec("fill", 1.0), spec("int", 0, 16)], "small integers"
    return ([spec("normal", 0.0, 1.0), spec("uniform", 0.0, 1.0), spec("normal", 0.0, 4.0)],
            "normal(0, 1)")


# --------------------------------------------------------------------------- search

def _value_sets(options: Sequence[Sequence[InputSpec]]) -> Iterator[tuple[int, ...]]:
    """Candidate indices: all first, then one input at a time through its others, then the k-th
    candidate of every input at once."""
    n = len(options)
    first = (0,) * n
    yield first
    for i, cands in enumerate(options):
        for k in range(1, len(cands)):
            yield first[:i] + (k,) + first[i + 1:]
    for k in range(1, max((len(c) for c in options), default=1)):
        combo = tuple(min(k, len(c) - 1) for c in options)
        if sum(1 for x in combo if x) > 1:
            yield combo


def _size_sets(slots: Sequence[Any]) -> Iterator[dict[str, int]]:
    """vlc.shape_choice's order: the k-th candidate of every dim at once, then one at a time."""

    if not slots:
        yield {}
        return
    yield from size_trials(list(slots), {})


def _outputs_spread(outputs: Sequence[np.ndarray]) -> bool:
    for out in outputs:
        a = np.asarray(out)
        if a.dtype.kind != "f" or a.size <= 1:
            continue
        a64 = a.astype(np.float64)
        if not np.isfinite(a64).all() or no_spread(a64, float(np.std(a64))):
            return False
    return True


def derive_input_specs(onnx_path: str | Path, signature: Signature, *, batch: int = 1) -> DerivedInputs:
    """Specs for every input of a bare ONNX graph (see the module doc), checked in ONNX Runtime."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = _Graph(model)
    batch_names = _batch_names(signature)
    slots = dim_slots(list(signature.inputs), batch_names)
    options: list[list[InputSpec]] = []
    reasons: dict[str, str] = {}
    for sig in signature.inputs:
        shape = tuple(BATCH if isinstance(d, str) and d in batch_names else d for d in sig.shape)
        cands, why = _candidates(sig, graph, shape)
        options.append(cands)
        reasons[sig.name] = why

    def sized(choice: tuple[int, ...], sizes: Mapping[str, int]) -> list[InputSpec]:
        return [replace(options[i][k], shape=tuple(sizes.get(d, d) if isinstance(d, str) and d != BATCH else d
                                                   for d in options[i][k].shape))
                for i, k in enumerate(choice)]

    default = tuple(0 for _ in options)
    try:
        runner = TrialRunner(Path(onnx_path))
    except Exception as exc:  # noqa: BLE001 - custom ops, a file ONNX Runtime cannot load
        return DerivedInputs(sized(default, {s.name: 1 for s in slots}),
                             f"unchecked: ONNX Runtime cannot load the graph ({first_line(exc, limit=120)})",
                             reasons, {s.name: 1 for s in slots}, spread=False, runs=False)
    start, tried = time.perf_counter(), 0
    first_running: tuple[tuple[int, ...], dict[str, int]] | None = None
    first_error = ""
    for choice in _value_sets(options):
        for sizes in _size_sets(slots):
            if tried >= MAX_TRIALS or time.perf_counter() - start > MAX_SECONDS:
                break
            tried += 1
            specs = sized(choice, sizes)
            rng = np.random.default_rng(0)
            feeds = {s.name: s.generate(batch, rng) for s in specs}
            try:
                outputs = runner.session.run(None, feeds)
            except Exception as exc:  # noqa: BLE001 - any failure means "not these values"
                first_error = first_error or first_line(exc, limit=200)
                continue
            if first_running is None:
                first_running = (choice, sizes)
            if _outputs_spread(outputs):
                return _result(options, choice, sizes, reasons, specs, tried, spread=True)
            break  # these values run: other sizes will not add spread, try other values
    if first_running is not None:
        choice, sizes = first_running
        return _result(options, choice, sizes, reasons, sized(choice, sizes), tried, spread=False)
    return DerivedInputs(sized(default, {s.name: 1 for s in slots}),
                         f"no generated inputs ran the graph in ONNX Runtime ({tried} tried; first error: "
                         f"{first_error})", reasons, {s.name: 1 for s in slots}, spread=False, runs=False)


def _result(options: Sequence[Sequence[InputSpec]], choice: tuple[int, ...], sizes: dict[str, int],
            reasons: dict[str, str], specs: list[InputSpec], tried: int, *, spread: bool) -> DerivedInputs:
    for i, k in enumerate(choice):
        if k:
            s = options[i][k]
            reasons[s.name] = f"{_describe(s)} (the first candidate did not run or gave no spread)"
    how = (f"checked in ONNX Runtime: the graph runs{' with spread in every float output' if spread else ''} "
           f"({tried} candidate set(s) tried)")
    if not spread:
        how += ("; no generated input gave every float output spread, so accuracy checks judge those "
                "outputs by their error only: pass real inputs with --input for a stronger check")
    return DerivedInputs(specs, how, reasons, dict(sizes), spread=spread, runs=True)


def _describe(spec: InputSpec) -> str:
    if spec.kind == "fill":
        return f"every element {spec.low:g}"
    if spec.kind in ("normal",):
        return f"normal({spec.low:g}, {spec.high:g})"
    if spec.kind in ("uniform", "int"):
        return f"{spec.kind} [{spec.low:g}, {spec.high:g})"
    return spec.kind
