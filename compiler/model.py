"""ModelSource: a PyTorch model with named inputs, how to generate them, and its batch sweep.

Example factories return one; `file.py:factory` and `package.module:factory` may return one,
or a plain `(module, example_inputs)` pair that vlc turns into one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlc.errors import VlcError
from vlc.signature import Dim, TensorSig

BATCH = "batch"


@dataclass(frozen=True)
class InputSpec:
    """One model input and how to generate realistic values for it.

    `kind`: "normal" (mean/std via low/high), "uniform" [low, high), "int" [low, high), "bool",
    "fill" (every element `low`: a shape, a sample rate, a K), "mask" (ones, with the last
    position of each row 0 so masking is exercised, never a row without a kept token),
    "scales" (a Resize scales vector: 1 on every axis, `high` on the last two).
    Dims named BATCH are the dynamic batch axis.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    kind: str = "normal"
    low: float = 0.0
    high: float = 1.0

    def sig(self) -> TensorSig:
        return TensorSig(self.name, self.dtype, self.shape)

    def generate(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        # an array even for a scalar input (shape ()): ONNX Runtime refuses numpy scalars
        return np.asarray(self._values(batch, rng))

    def _values(self, batch: int, rng: np.random.Generator) -> Any:
        shape = TensorSig(self.name, self.dtype, self.shape).concrete(batch)
        if self.kind == "int":
            return rng.integers(int(self.low), int(self.high), size=shape).astype(self.dtype)
        if self.kind == "bool":
            return rng.random(shape) < 0.5
        if self.kind == "fill":
            return np.full(shape, self.low).astype(self.dtype)
        if self.kind == "mask":
            mask = np.ones(shape, self.dtype)
            if len(shape) >= 1 and shape[-1] > 1:
                mask[..., -1] = 0
            return mask
        if self.kind == "scales":
            scales = np.ones(shape, self.dtype)
            if len(shape) == 1 and shape[0] >= 3:
                scales[-2:] = self.high
            return scales
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high, size=shape).astype(self.dtype)
        return (rng.standard_normal(shape) * self.high + self.low).astype(self.dtype)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "kind": self.kind, "low": self.low, "high": self.high}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputSpec:
        return cls(data["name"], tuple(data["shape"]), data["dtype"], data["kind"],
                   data["low"], data["high"])


InputGenerator = Callable[[int, int], dict[str, np.ndarray]]


@dataclass
class ModelSource:
    """A PyTorch model ready for export: forward takes the inputs positionally in `inputs` order."""

    name: str
    ref: str  # how to load it again: example name, file.py:factory, package.module:factory
    module: Any  # torch.nn.Module; typed loosely so this module imports without torch
    inputs: list[InputSpec]
    output_names: list[str]
    batch_sizes: tuple[int, ...] = (1, 8)
    generator: InputGenerator | None = None  # (batch, seed) -> feeds; richer than per-input specs
    opset: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def generate_inputs(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        if self.generator is not None:
            return self.generator(batch, seed)
        return generate_from_specs(self.inputs, batch, seed)

    @property
    def dynamic_batch(self) -> bool:
        return any(BATCH in spec.shape for spec in self.inputs)


def generate_from_specs(specs: list[InputSpec], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {spec.name: spec.generate(batch, rng) for spec in specs}


def specs_from_signature(inputs: tuple[TensorSig, ...]) -> list[InputSpec]:
    """Generic generators for a bare ONNX graph: normal floats, small ints, random bools.

    Integer inputs get values in [0, 2) because their valid range (vocabulary size,
    index bounds) is not in the graph; vlc-exported graphs carry better specs in metadata.
    """
    specs = []
    for sig in inputs:
        shape = tuple(BATCH if not isinstance(d, int) else d for d in sig.shape)
        if sig.dtype == "bool":
            specs.append(InputSpec(sig.name, shape, "bool", "bool"))
        elif np.issubdtype(np.dtype(sig.dtype), np.integer):
            specs.append(InputSpec(sig.name, shape, sig.dtype, "int", 0, 2))
        else:
            specs.append(InputSpec(sig.name, shape, sig.dtype, "normal", 0.0, 1.0))
    return specs


def flatten_outputs(out: Any) -> list[Any]:
    """A tensor, nested tuples/lists, or a dict of tensors, as a flat list (the ONNX exporter's order)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten_outputs(v)]
    raise VlcError(f"the model's forward returned {type(out).__name__}",
                   fix="return a tensor, a tuple/list of tensors, or a dict of tensors")


def named_outputs(out: Any, output_names: list[str]) -> dict[str, Any]:
    if isinstance(out, dict) and all(name in out for name in output_names):
        return {name: out[name] for name in output_names}
    values = flatten_outputs(out)
    if len(values) != len(output_names):
        raise VlcError(f"the model returned {len(values)} output(s), the artifact names "
                       f"{len(output_names)} ({', '.join(output_names)})",
                       fix="rebuild the artifact with `vlc compile --force` if the model changed")
    return dict(zip(output_names, values))
