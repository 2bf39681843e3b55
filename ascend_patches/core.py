"""The patch registry: named, numerics-keeping rewrites of an ONNX model for ATC.

A patch is a function ``(onnx.ModelProto, PatchContext) -> onnx.ModelProto``. The context says
what the graph is being prepared for (CANN major version, batch size to freeze, precision);
patches that do not depend on it ignore it. `apply_patches` runs a list in the canonical
order of `ORDER` and records what each changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from vlc.errors import InputError

META_CANN = "vlc.ascend.cann"
META_BATCH = "vlc.ascend.batch"


@dataclass(frozen=True)
class PatchContext:
    """What the graph is being prepared for.

    `batch`: freeze dynamic batch dims to this size (None keeps them dynamic, as for
    dynamic-batch gears); `shapes`: exact input shapes that override `batch`;
    `cann`: CANN major version (6, 7 or 8); `precision`: the vlc precision of the build.
    """

    cann: int = 6
    batch: int | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    precision: str = "fp16"
    soc_version: str | None = None

    def with_batch(self, batch: int | None) -> PatchContext:
        return replace(self, batch=batch)


@dataclass
class PatchRecord:
    """What one patch did: how many sites it rewrote and notes for the build log."""

    name: str
    changed: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "changed": self.changed, "notes": self.notes,
                "seconds": round(self.seconds, 4)}


PatchFn = Callable[[Any, PatchContext, PatchRecord], Any]


@dataclass(frozen=True)
class Patch:
    name: str
    summary: str
    fn: PatchFn

    def apply(self, model: Any, ctx: PatchContext | None = None) -> tuple[Any, PatchRecord]:
        record = PatchRecord(self.name)
        start = time.perf_counter()
        result = self.fn(model, ctx or PatchContext(), record)
        record.seconds = time.perf_counter() - start
        return (model if result is None else result), record


PATCHES: dict[str, Patch] = {}

# The order patches run in when several are asked for: shapes first (later patches need
# static shapes and folded constants), opset last but one (earlier patches may emit nodes of
# any opset, the converter then settles them), a final clean-up of what the rewrites left.
ORDER = (
    "ascend-freeze-shapes",
    "ascend-trilu-mask",
    "ascend-gather-neg-index",
    "ascend-einsum",
    "ascend-attention",
    "ascend-layernorm",
    "ascend-opset",
    "ascend-int64-to-int32",
    "ascend-fp16-clamp",
)


def patch(name: str, summary: str) -> Callable[[PatchFn], PatchFn]:
    """Register a patch function under `name`."""

    def decorate(fn: PatchFn) -> PatchFn:
        if name in PATCHES:
            raise ValueError(f"patch {name} registered twice")
        PATCHES[name] = Patch(name, summary, fn)
        return fn

    return decorate


def _load_all() -> None:
    # Importing the modules registers their patches.
    from vlc.ascend_patches import attention, einsum, fp16, gather, int32, layernorm, opset, shapes, trilu  # noqa: F401


def get_patch(name: str) -> Patch:
    _load_all()
    if name not in PATCHES:
        raise InputError(f"unknown Ascend patch '{name}'",
                         fix=f"known patches: {', '.join(ORDER)}")
    return PATCHES[name]


def all_patches() -> list[Patch]:
    _load_all()
    return [PATCHES[n] for n in ORDER]


def ordered(names: Iterable[str]) -> list[str]:
    wanted = set(names)
    for n in wanted:
        get_patch(n)
    return [n for n in ORDER if n in wanted]


def apply_patches(model: Any, names: Iterable[str], ctx: PatchContext | None = None
                  ) -> tuple[Any, list[PatchRecord]]:
    """Apply patches (in canonical order) to an onnx.ModelProto; returns the new model."""
    import onnx

    ctx = ctx or PatchContext()
    records = []
    for name in ordered(names):
        model, record = get_patch(name).apply(model, ctx)
        records.append(record)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise InputError(f"the patched graph fails onnx.checker: {first}",
                         fix="report it; rerun with -O patches=none to compile the graph unpatched") from None
    return model, records


def context_from_metadata(model: Any) -> PatchContext:
    """The context of a patch run as a plain graph pass (`vlc export --passes`): CANN and
    batch from the model's metadata when set, else CANN 6 rules and dynamic batch."""
    meta = {p.key: p.value for p in model.metadata_props}
    cann = int(meta.get(META_CANN, 6))
    batch = int(meta[META_BATCH]) if META_BATCH in meta else None
    return PatchContext(cann=cann, batch=batch)
