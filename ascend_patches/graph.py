"""Small helpers over onnx.ModelProto shared by the patches (main graph only)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def opset(model: Any, domain: str = "") -> int:
    for imp in model.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(imp.version)
    return 0


def set_opset(model: Any, version: int) -> None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = version
            return
    model.opset_import.add(domain="", version=version)


class Graph:
    """An index over a GraphProto: producers, consumers, constants, fresh names."""

    def __init__(self, model: Any):
        self.model = model
        self.graph = model.graph
        self._names = {n for n in self._all_names()}
        self._counter = itertools.count()

    def _all_names(self) -> Iterable[str]:
        g = self.graph
        for v in itertools.chain(g.input, g.output, g.value_info, g.initializer):
            yield v.name
        for n in g.node:
            yield n.name
            yield from n.input
            yield from n.output

    def fresh(self, base: str) -> str:
        base = base or "vlc"
        while True:
            name = f"{base}_vlc{next(self._counter)}"
            if name not in self._names:
                self._names.add(name)
                return name

    # ---- index -----------------------------------------------------------------------------
    def producers(self) -> dict[str, Any]:
        return {out: n for n in self.graph.node for out in n.output}

    def consumers(self) -> dict[str, list[tuple[Any, int]]]:
        found: dict[str, list[tuple[Any, int]]] = {}
        for n in self.graph.node:
            for i, name in enumerate(n.input):
                if name:
                    found.setdefault(name, []).append((n, i))
        return found

    def graph_outputs(self) -> set[str]:
        return {o.name for o in self.graph.output}

    def initializer(self, name: str) -> Any | None:
        for init in self.graph.initializer:
            if init.name == name:
                return init
        return None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant-node output, else None."""
        from onnx import numpy_helper

        init = self.initializer(name)
        if init is not None:
            return numpy_helper.to_array(init)
        producer = self.producers().get(name)
        if producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx"):
            for attr in producer.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
                if attr.name == "value_float":
                    return np.array(attr.f, dtype=np.float32)
                if attr.name == "value_int":
                    return np.array(attr.i, dtype=np.int64)
                if attr.name == "value_floats":
                    return np.array(list(attr.floats), dtype=np.float32)
                if attr.name == "value_ints":
                    return np.array(list(attr.ints), dtype=np.int64)
        return None

    def rank(self, name: str) -> int | None:
        """The rank of a tensor when an input, output, value_info or initializer gives it."""
        g = self.graph
        for v in itertools.chain(g.input, g.output, g.value_info):
            if v.name == name and v.type.tensor_type.HasField("shape"):
                return len(v.type.tensor_type.shape.dim)
        init = self.initializer(name)
        return len(init.dims) if init is not None else None

    # ---- edits -----------------------------------------------------------------------------
    def add_constant(self, base: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def insert_before(self, anchor: Any, nodes: list[Any]) -> None:
        index = list(self.graph.node).index(anchor)
        for offset, node in enumerate(nodes):
            self.graph.node.insert(index + offset, node)

    def replace_node(self, old: Any, nodes: list[Any]) -> None:
        self.insert_before(old, nodes)
        self.graph.node.remove(old)

    def rename_input_uses(self, old: str, new: str, skip: Any = None) -> None:
        for n in self.graph.node:
            if n is skip:
                continue
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = new

    def remove_unused(self) -> int:
        """Drop nodes whose outputs nobody uses and initializers nobody reads."""
        removed = 0
        while True:
            used = {o.name for o in self.graph.output}
            for n in self.graph.node:
                used.update(n.input)
            dead = [n for n in self.graph.node
                    if n.output and not any(o in used for o in n.output)]
            if not dead:
                break
            for n in dead:
                self.graph.node.remove(n)
                removed += 1
        used = {o.name for o in self.graph.output}
        for n in self.graph.node:
            used.update(n.input)
        for init in [i for i in self.graph.initializer if i.name not in used]:
            self.graph.initializer.remove(init)
        return removed


def standard_nodes(model: Any, op_type: str) -> list[Any]:
    """The main graph's nodes of one standard-domain ONNX operator (custom domains are left alone)."""
    return [n for n in model.graph.node if n.op_type == op_type and n.domain in ("", "ai.onnx")]


def node(op_type: str, inputs: list[str], outputs: list[str], name: str = "", **attrs: Any) -> Any:
    from onnx import helper

    return helper.make_node(op_type, inputs, outputs, name=name or None, **attrs)


def attr(n: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in n.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def infer_shapes(model: Any) -> Any:
    """ONNX shape inference with data propagation; the model unchanged when inference fails."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort: patches then treat shapes as unknown
        return model


def value_types(model: Any) -> dict[str, tuple[int, tuple[int | str | None, ...] | None]]:
    """name -> (elem_type, shape) for every typed value (inputs, outputs, value_info, inits)."""
    found: dict[str, tuple[int, tuple[int | str | None, ...] | None]] = {}
    g = model.graph
    for v in itertools.chain(g.input, g.value_info, g.output):
        t = v.type.tensor_type
        if not v.type.HasField("tensor_type"):
            continue
        shape = None
        if t.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                          for d in t.shape.dim)
        found[v.name] = (t.elem_type, shape)
    for init in g.initializer:
        found[init.name] = (init.data_type, tuple(init.dims))
    return found


def static_shape(types: dict[str, Any], name: str) -> tuple[int, ...] | None:
    entry = types.get(name)
    if entry is None or entry[1] is None:
        return None
    if all(isinstance(d, int) and d > 0 for d in entry[1]):
        return tuple(entry[1])
    return None


def squeeze_node(g: Graph, data: str, axes: list[int], out: str, name: str) -> list[Any]:
    """Squeeze/Unsqueeze take axes as an attribute before opset 13 and as an input after."""
    return _axes_node("Squeeze", g, data, axes, out, name)


def unsqueeze_node(g: Graph, data: str, axes: list[int], out: str, name: str) -> list[Any]:
    return _axes_node("Unsqueeze", g, data, axes, out, name)


def _axes_node(op: str, g: Graph, data: str, axes: list[int], out: str, name: str) -> list[Any]:
    if opset(g.model) >= 13:
        axes_name = g.add_constant(f"{name}_axes", np.array(axes, dtype=np.int64))
        return [node(op, [data, axes_name], [out], name=name)]
    return [node(op, [data], [out], name=name, axes=axes)]
