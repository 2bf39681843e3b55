"""Model-source patches applied before export (PyTorch level).

Some fixes cannot be made on the ONNX graph: the ViLBERT deployment guide had to flatten a
forward() that takes nested dicts before torch.onnx could export it. `FlattenInputs` wraps
such a module so it takes named positional tensors; `SOURCE_PATCHES` names patches that
`apply_source_patches` applies to a ModelSource (each returns a new module; the original is
not modified).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from vlc.errors import InputError

SEP = "__"


def flatten_nested(example: Mapping[str, Any], prefix: str = "") -> list[tuple[str, tuple[str, ...]]]:
    """[(flat name, key path)] for every tensor leaf of a nested dict, in insertion order."""
    leaves: list[tuple[str, tuple[str, ...]]] = []
    for key, value in example.items():
        path = (*(prefix.split(SEP) if prefix else ()), str(key))
        if isinstance(value, Mapping):
            leaves += flatten_nested(value, SEP.join(path))
        else:
            leaves.append((SEP.join(path), path))
    return leaves


def _torch_module_base() -> type:
    import torch

    return torch.nn.Module


class FlattenInputs(_torch_module_base()):  # type: ignore[misc]
    """forward(*tensors) -> inner(**nested) with the nested dicts rebuilt from the flat tensors.

    `layout` is flatten_nested(example): names like `image__features` for
    `inner(image={"features": t})`. Outputs: a dict is returned as a tuple in key order (names
    in `output_names`), so exporters see plain tensors.
    """

    def __init__(self, inner: Any, layout: list[tuple[str, tuple[str, ...]]]):
        super().__init__()
        self.inner = inner
        self.layout = list(layout)
        self.input_names = [name for name, _ in self.layout]
        self.output_names: list[str] | None = None

    def forward(self, *tensors: Any) -> Any:
        if len(tensors) != len(self.layout):
            raise TypeError(f"expected {len(self.layout)} tensors ({', '.join(self.input_names)}), "
                            f"got {len(tensors)}")
        nested: dict[str, Any] = {}
        for tensor, (_, path) in zip(tensors, self.layout):
            node = nested
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = tensor
        out = self.inner(**nested)
        if isinstance(out, Mapping):
            self.output_names = [str(k) for k in out]
            return tuple(out.values())
        return out


@dataclass(frozen=True)
class SourcePatch:
    name: str
    summary: str
    apply: Callable[[Any], Any]  # ModelSource -> ModelSource


def _flatten_dict_inputs(source: Any) -> Any:
    example = source.metadata.get("nested_example")
    if example is None:
        raise ValueError("flatten-dict-inputs needs source.metadata['nested_example'] (the nested "
                         "dict of example tensors the forward takes)")
    layout = flatten_nested(example)
    return replace(source, module=FlattenInputs(source.module, layout))


def _finite_masked_fill(source: Any) -> Any:
    """Wrap forward so masked_fill with +-inf / float32 extremes uses +-65504 (fp16-safe)."""
    import torch

    inner = source.module

    class FiniteMasks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            original = torch.Tensor.masked_fill

            def finite(self_: Any, mask: Any, value: Any) -> Any:
                if isinstance(value, (int, float)) and abs(float(value)) > 65504.0:
                    value = 65504.0 if float(value) > 0 else -65504.0
                return original(self_, mask, value)

            torch.Tensor.masked_fill = finite
            try:
                return self.inner(*args)
            finally:
                torch.Tensor.masked_fill = original

    return replace(source, module=FiniteMasks())


SOURCE_PATCHES: dict[str, SourcePatch] = {p.name: p for p in (
    SourcePatch("flatten-dict-inputs", "nested-dict forward -> named positional tensors "
                "(metadata['nested_example'] gives the structure)", _flatten_dict_inputs),
    SourcePatch("finite-masked-fill", "masked_fill with +-inf or float32 extremes -> +-65504 "
                "while tracing, so masks stay finite in fp16", _finite_masked_fill),
)}


def apply_source_patches(source: Any, names: list[str]) -> Any:
    """A new ModelSource with the named source patches applied in order."""
    for name in names:
        if name not in SOURCE_PATCHES:
            raise InputError(f"unknown source patch '{name}'",
                             fix=f"known source patches: {', '.join(SOURCE_PATCHES)}")
        source = SOURCE_PATCHES[name].apply(source)
    return source
