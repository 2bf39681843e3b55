"""Small readers shared by vlc's own onnxscript rewrite rules."""

from __future__ import annotations

from typing import Any

import onnx_ir as ir


def const_ints(value: ir.Value | None) -> list[int] | None:
    """A constant 1-D integer tensor (a shape, split sizes) as a list; None if not constant."""
    tensor = None if value is None else value.const_value
    if tensor is None:
        return None
    array = tensor.numpy()
    return [int(v) for v in array.reshape(-1)] if array.ndim == 1 else None


def attr_value(node: ir.Node, name: str, default: Any) -> Any:
    attr = node.attributes.get(name)
    return default if attr is None else attr.value
