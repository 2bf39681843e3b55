"""TargetSpec: what to build, as plain data (target, preset, precision, shapes, options)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from vlc.errors import InputError


class Precision(str, Enum):
    FP32 = "fp32"
    TF32 = "tf32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    @classmethod
    def parse(cls, text: str) -> Precision:
        try:
            return cls(text.lower())
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise InputError(f"unknown precision '{text}'", fix=f"use one of: {choices}") from None


Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeRange:
    """min/opt/max shape of one input (TensorRT optimization profile, ATC gears use min..max)."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if bad := [d for s in (self.min, self.opt, self.max) for d in s if d < 1]:
            raise InputError(f"shape range {self.text()} has dimension {bad[0]}; dimensions and batch "
                             "sizes must be >= 1", fix="use positive dimensions, e.g. 1x3x224x224")
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise InputError(f"shape range {self.text()} has shapes of different rank",
                             fix="give min, opt and max with the same number of dimensions")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if not (0 < lo <= mid <= hi):
                raise InputError(f"shape range {self.text()} is not ordered min <= opt <= max",
                                 fix="use positive dimensions with min <= opt <= max")

    def contains(self, shape: Shape) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))

    def text(self) -> str:
        return ",".join("x".join(map(str, s)) for s in (self.min, self.opt, self.max))

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: dict[str, list[int]]) -> ShapeRange:
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))


def parse_shape(text: str, *, what: str) -> Shape:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise InputError(f"cannot read shape '{text}' in {what}",
                         fix="write shapes as dimensions joined by 'x', e.g. 8x3x224x224") from None
    return dims


def parse_shape_ranges(items: list[str]) -> dict[str, ShapeRange]:
    """Parse `name:min,opt,max` (or `name:shape` for a fixed shape) into ShapeRanges."""
    ranges: dict[str, ShapeRange] = {}
    for item in items:
        name, sep, rest = item.partition(":")
        if not sep or not name or not rest:
            raise InputError(f"cannot read --shapes '{item}'",
                             fix="use name:MIN,OPT,MAX with shapes like 1x3x224x224")
        shapes = [parse_shape(s, what=f"--shapes {name}") for s in rest.split(",")]
        if len(shapes) == 1:
            shapes = shapes * 3
        if len(shapes) != 3:
            raise InputError(f"--shapes {name} has {len(shapes)} shapes",
                             fix="give one shape or exactly three: min,opt,max")
        ranges[name] = ShapeRange(*shapes)
    return ranges


def parse_batch_range(text: str) -> tuple[int, int, int]:
    """`8` -> (8,8,8); `1,8,32` -> (1,8,32)."""
    if not text.strip():
        raise InputError("--batch is empty", fix="use N or MIN,OPT,MAX, e.g. --batch 1,8,32, or leave it out")
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"cannot read batch range '{text}'", fix="use N or MIN,OPT,MAX") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise InputError(f"batch range '{text}' has {len(values)} values", fix="use N or MIN,OPT,MAX")
    if min(values) < 1:
        raise InputError(f"batch range '{text}': batch sizes must be >= 1", fix="use N or MIN,OPT,MAX with N >= 1")
    if not values[0] <= values[1] <= values[2]:
        raise InputError(f"batch range '{text}' is not MIN<=OPT<=MAX", fix="use N or MIN,OPT,MAX")
    return values


@dataclass
class TargetSpec:
    """Everything a target needs to build one artifact; data only."""

    target: str
    precision: Precision = Precision.FP32
    preset: str | None = None
    device: str = "cpu"
    shapes: dict[str, ShapeRange] = field(default_factory=dict)
    batch: tuple[int, int, int] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "precision": self.precision.value,
            "preset": self.preset,
            "device": self.device,
            "shapes": {k: v.to_json() for k, v in sorted(self.shapes.items())},
            "batch": list(self.batch) if self.batch else None,
            "options": dict(sorted(self.options.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetSpec:
        return cls(
            target=data["target"],
            precision=Precision(data["precision"]),
            preset=data.get("preset"),
            device=data.get("device", "cpu"),
            shapes={k: ShapeRange.from_json(v) for k, v in data.get("shapes", {}).items()},
            batch=tuple(data["batch"]) if data.get("batch") else None,
            options=dict(data.get("options", {})),
        )

    def key(self) -> str:
        """Stable hash of the spec, part of an artifact's cache key."""
        text = json.dumps(self.to_json(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_options(items: list[str]) -> dict[str, Any]:
    """`-O key=value` items into a dict; values parsed as JSON when they look like it."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"cannot read option '{item}'", fix="use -O key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options
