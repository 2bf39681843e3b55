"""The graphs under comparison: their nodes in topological order, which reference tensor each
candidate tensor stands for, and ONNX Runtime runs with chosen intermediate tensors exposed."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import InputError
from vlc.measure import cpu_options, onnx_cpu_outputs
from vlc.onnx_files import external_data_files

# Names the precision pass (vlc.frontend.precision.lowp) gives the copies of a tensor X it casts:
# X__to_fp32 / X__to_lowp (a Cast at a region crossing) and X__lowp (the low-precision original
# of a graph output, or a converted constant). Each holds X's values, so it stands for X.
CAST_SUFFIXES = ("__to_fp32", "__to_lowp", "__lowp")
_SKIP_OPS = {"Constant"}  # a constant's value is the same on both sides by construction


@dataclass(frozen=True)
class Node:
    """A reference node, as the report names it."""

    index: int  # position in topological order
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def topological_nodes(graph: Any) -> list[Node]:
    """The graph's top-level nodes in topological order (the file's order where it is valid:
    files from other producers are not always sorted)."""
    produced = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    order: list[int] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def visit(start: int) -> None:
        stack = [(start, iter(graph.node[start].input))]
        state[start] = 1
        while stack:
            i, inputs = stack[-1]
            for name in inputs:
                j = produced.get(name)
                if j is not None and j not in state:
                    state[j] = 1
                    stack.append((j, iter(graph.node[j].input)))
                    break
            else:
                stack.pop()
                state[i] = 2
                order.append(i)

    for i in range(len(graph.node)):
        if i not in state:
            visit(i)
    nodes = []
    for k, i in enumerate(order):
        n = graph.node[i]
        nodes.append(Node(k, n.name or f"{n.op_type}_{i}", n.op_type, tuple(x for x in n.input if x),
                          tuple(o for o in n.output if o)))
    return nodes


def _elem_types(proto: Any) -> dict[str, int]:
    """Element types shape inference can tell (weights are not needed for it)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - a graph the inferencer rejects: types are learnt from the run
        inferred = proto
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.output)
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}



def _is_float_type(elem_type: int | None) -> bool:
    from onnx import TensorProto

    return elem_type is None or elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                                              TensorProto.DOUBLE)


def compared_tensors(proto: Any, nodes: Sequence[Node]) -> list[tuple[Node, str]]:
    """(node, output) of every float node output worth comparing, in topological order."""
    types = _elem_types(proto)
    return [(node, out) for node in nodes if node.op_type not in _SKIP_OPS
            for out in node.outputs if _is_float_type(types.get(out))]


def candidate_names(reference: Sequence[str], candidate: Any) -> dict[str, str]:
    """For each reference tensor, the candidate tensor holding its values.

    A tensor quantized by a QuantizeLinear -> DequantizeLinear pair is read after the pair (what
    the candidate's consumers compute with); otherwise the tensor of the same name, else its
    cast copy from the precision pass. Reference tensors without a counterpart are left out."""
    produced = dict.fromkeys(o for n in candidate.graph.node for o in n.output if o)  # in graph order
    by_input: dict[str, list[Any]] = {}
    for n in candidate.graph.node:
        for i in n.input:
            by_input.setdefault(i, []).append(n)
    aliases: dict[str, str] = {}
    for name in produced:  # the earliest copy wins: the one the others are cast from
        for suffix in CAST_SUFFIXES:
            if name.endswith(suffix):
                aliases.setdefault(name[: -len(suffix)], name)
    found: dict[str, str] = {}
    for ref in reference:
        own = ref if ref in produced else aliases.get(ref)
        if own is None:
            continue
        found[ref] = _dequantized(own, by_input) or _dequantized(ref, by_input) or own
    return found


def _dequantized(name: str, by_input: Mapping[str, list[Any]]) -> str | None:
    """The output of DequantizeLinear(QuantizeLinear(name)), if the candidate has that pair."""
    for q in by_input.get(name, []):
        if q.op_type != "QuantizeLinear" or q.input[0] != name:
            continue
        for dq in by_input.get(q.output[0], []):
            if dq.op_type == "DequantizeLinear" and dq.input[0] == q.output[0]:
                return dq.output[0]
    return None


class GraphRunner:
    """Runs one ONNX graph in ONNX Runtime on the CPU with a chosen set of tensors as its outputs.

    Every run is a fresh session of the graph with only those outputs, so the memory a run holds
    is bounded by what it exposes. Weights stay where they are: a graph with external data is held
    without them, and ONNX Runtime reads them from the model's own directory. A graph whose weights
    are inside the file and larger than SPILL_BYTES has them written once to a temporary folder, so
    a run serializes the graph, not its weights."""

    SPILL_BYTES = 64 << 20

    def __init__(self, onnx_path: Path):
        import onnx

        self.path = Path(onnx_path)
        self.runs = 0
        try:
            external = bool(external_data_files(self.path))  # one line when a data file is missing
            self.proto: Any = onnx.load(str(self.path), load_external_data=not external)  # None once closed
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - protobuf's several types for a broken file
            raise InputError(f"cannot read {self.path} as an ONNX model: {type(exc).__name__}",
                             fix="pass a valid .onnx file") from None
        self.weights_dir = self.path.resolve().parent if external else None
        self._spilled: tempfile.TemporaryDirectory | None = None
        if not external and self.proto.ByteSize() > self.SPILL_BYTES:
            self._spill()
        self.outputs = [o.name for o in self.proto.graph.output]

    def _spill(self) -> None:
        import onnx

        self._spilled = tempfile.TemporaryDirectory(prefix="vlc-debug-")
        folder = Path(self._spilled.name)
        onnx.save(self.proto, str(folder / "model.onnx"), save_as_external_data=True,
                  all_tensors_to_one_file=True, location="weights.bin")
        self.proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        self.weights_dir = folder

    def close(self) -> None:
        self.proto = None
        if self._spilled is not None:
            self._spilled.cleanup()
            self._spilled = None

    def __enter__(self) -> GraphRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        """The values of `names` (any tensors the graph computes) on `feeds`."""
        import onnx

        graph = self.proto.graph
        kept = list(graph.output)
        del graph.output[:]
        graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names))
        options = debug_options()
        if self.weights_dir is not None:
            options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                             str(self.weights_dir))
        try:
            self.runs += 1
            return onnx_cpu_outputs(self.proto, feeds, options=options)
        finally:
            del graph.output[:]
            graph.output.extend(kept)


def debug_options() -> Any:
    """CPU session options for layer-wise runs: basic optimizations only, so each node computes
    what it says (fusions differ with the set of exposed tensors and would change the numbers
    from one window to the next)."""
    import onnxruntime as ort

    options = cpu_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return options


def windows(items: Sequence[Any], size: int, *, budget: int | None = None,
            sizes: list[int] | None = None) -> Iterator[Sequence[Any]]:
    """Consecutive windows of at most `size` items. With a byte `budget`, a window also holds no
    more items than the budget allows at the largest tensor seen so far: the caller appends each
    run's largest tensor size (bytes) to `sizes`, since sizes are only known once a graph has run."""
    start = 0
    while start < len(items):
        count = size
        if budget is not None and sizes:
            count = max(1, min(size, budget // max(1, max(sizes))))
        yield items[start:start + count]
        start += count
