"""Input/output signatures of a graph and validation of user inputs against them."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import InputError

Dim = int | str  # a fixed size, or a symbolic name such as "batch"


@dataclass(frozen=True)
class TensorSig:
    name: str
    dtype: str  # numpy dtype name: float32, int64, bool, ...
    shape: tuple[Dim, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSig:
        return cls(data["name"], data["dtype"], tuple(data["shape"]))

    def concrete(self, batch: int) -> tuple[int, ...]:
        """The shape with every symbolic dim set to `batch` (vlc graphs only make batch dynamic)."""
        return tuple(d if isinstance(d, int) else batch for d in self.shape)

    def describe(self) -> str:
        return f"{self.name}: {self.dtype}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]

    def to_json(self) -> dict[str, Any]:
        return {"inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Signature:
        return cls(tuple(TensorSig.from_json(t) for t in data["inputs"]),
                   tuple(TensorSig.from_json(t) for t in data["outputs"]))

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSig:
        for t in self.inputs:
            if t.name == name:
                return t
        raise InputError(f"the model has no input named '{name}'",
                         fix=f"inputs are: {', '.join(self.input_names)}")

    def validate_inputs(self, feeds: Mapping[str, np.ndarray], *, where: str = "inputs") -> int:
        """Check names, dtypes and shapes; return the batch size (first dim of the first input)."""
        expected, given = set(self.input_names), set(feeds)
        if missing := sorted(expected - given):
            raise InputError(f"missing input(s) {', '.join(missing)}", where=where,
                             fix=f"the model takes: {'; '.join(t.describe() for t in self.inputs)}")
        if extra := sorted(given - expected):
            raise InputError(f"unknown input(s) {', '.join(extra)}", where=where,
                             fix=f"the model takes: {', '.join(self.input_names)}")
        symbols: dict[str, int] = {}
        for sig in self.inputs:
            array = feeds[sig.name]
            if array.dtype != np.dtype(sig.dtype):
                raise InputError(f"input '{sig.name}' has dtype {array.dtype}, the model takes {sig.dtype}",
                                 where=where, fix=f"convert it with .astype('{sig.dtype}')")
            if array.ndim != len(sig.shape):
                raise InputError(f"input '{sig.name}' has shape {list(array.shape)}, the model takes "
                                 f"rank {len(sig.shape)} {list(sig.shape)}", where=where,
                                 fix="reshape the input to the model's rank")
            for axis, (dim, size) in enumerate(zip(sig.shape, array.shape)):
                if isinstance(dim, int):
                    if dim != size:
                        raise InputError(f"input '{sig.name}' has size {size} on axis {axis}, the model "
                                         f"takes {dim} ({list(sig.shape)})", where=where,
                                         fix="give inputs of the model's fixed dimensions")
                elif symbols.setdefault(dim, size) != size:
                    raise InputError(f"input '{sig.name}' has {size} for dim '{dim}' on axis {axis}, "
                                     f"other inputs have {symbols[dim]}", where=where,
                                     fix="give all inputs the same batch size")
        first = feeds[self.inputs[0].name] if self.inputs else None
        return int(first.shape[0]) if first is not None and first.ndim else 1


_ONNX_TO_NUMPY: dict[int, str] = {}


def _onnx_dtype_name(elem_type: int) -> str:
    import onnx

    if not _ONNX_TO_NUMPY:
        for value in onnx.TensorProto.DataType.values():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                _ONNX_TO_NUMPY[value] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value)).name
        _ONNX_TO_NUMPY[onnx.TensorProto.BFLOAT16] = "bfloat16"
    return _ONNX_TO_NUMPY.get(elem_type, f"onnx:{elem_type}")


def is_dynamic_dim(dim: Any) -> bool:
    """Whether an onnx TensorShapeProto.Dimension is dynamic: named, unnamed, or negative.

    paddle2onnx and some converters write dim_value -1 for a dynamic axis; it is no size.
    """
    return not dim.HasField("dim_value") or dim.dim_value < 0


# dim_params that name nothing: '?' is paddle2onnx's and tf2onnx's "unknown", not a shared symbol
UNNAMED_PARAMS = frozenset({"", "?"})


def unnamed_dim(tensor: str, axis: int) -> str:
    """The name given to an unnamed dynamic axis: `dim0` is shared (the batch of every input);
    other axes are the tensor's own (two unnamed axes of different inputs are not the same size)."""
    return "dim0" if axis == 0 else f"{tensor}.dim{axis}"


def _value_sig(value: Any) -> TensorSig:
    ttype = value.type.tensor_type
    dims: list[Dim] = []
    for i, d in enumerate(ttype.shape.dim):
        if not is_dynamic_dim(d):
            dims.append(int(d.dim_value))
        else:
            param = d.dim_param if d.HasField("dim_param") else ""
            dims.append(unnamed_dim(value.name, i) if param in UNNAMED_PARAMS else param)
    return TensorSig(value.name, _onnx_dtype_name(ttype.elem_type), tuple(dims))


def onnx_signature(model: Any) -> Signature:
    """Signature of an onnx.ModelProto (or a path to one; weights are not loaded)."""
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(_value_sig(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_value_sig(v) for v in model.graph.output)
    return Signature(inputs, outputs)
