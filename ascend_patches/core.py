"""The Ascend patches: named, numerics-keeping rewrites of an ONNX model for ATC.

A patch is a function ``(onnx.ModelProto, PatchContext, PatchRecord) -> onnx.ModelProto | None``
registered with :func:`patch` as a :class:`vlc.frontend.passes.GraphPass` of the PROTO form,
so it runs through vlc's one pass runner (timed, nodes counted, recorded) like every other
pass. The context says what the graph is being prepared for (CANN major version, batch size to
freeze, precision); patches that do not depend on it ignore it. The order patches run in is
the Ascend target's pass set (`vlc.targets.ascend.patch_set`), not this module's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from vlc.errors import InputError, first_line
from vlc.frontend.passes import PROTO, FunctionPass, PassFn, PassRecord, run_passes

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


# What one patch did (sites rewritten, notes for the build log): the runner's record.
PatchRecord = PassRecord


class AscendPatch(FunctionPass):
    """A patch as a graph pass: ModelProto form, its context a PatchContext (from the model's
    metadata when the runner gives none, as for `vlc export --passes ascend-opset`)."""

    def __init__(self, name: str, summary: str, fn: PassFn) -> None:
        super().__init__(name, summary, fn, form=PROTO, keeps_numerics=True)

    def context(self, model: Any, given: Any) -> PatchContext:
        return given if isinstance(given, PatchContext) else context_from_metadata(model)


Patch = AscendPatch

PATCHES: dict[str, AscendPatch] = {}


def patch(name: str, summary: str) -> Callable[[PassFn], PassFn]:
    """Register a patch function under `name`."""

    def decorate(fn: PassFn) -> PassFn:
        if name in PATCHES:
            raise ValueError(f"patch {name} registered twice")
        PATCHES[name] = AscendPatch(name, summary, fn)
        return fn

    return decorate


def _load_all() -> None:
    # Importing the modules registers their patches.
    from vlc.ascend_patches import (  # local: each patch module imports this one  # noqa: F401
        attention,
        einsum,
        fp16,
        gather,
        int32,
        layernorm,
        opset,
        shapes,
        trilu,
    )


def get_patch(name: str) -> AscendPatch:
    _load_all()
    if name not in PATCHES:
        raise InputError(f"unknown Ascend patch '{name}'",
                         fix=f"known patches: {', '.join(sorted(PATCHES))}")
    return PATCHES[name]


def all_patches() -> list[AscendPatch]:
    """Every patch, by name (the order of a run is its pass set's)."""
    _load_all()
    return [PATCHES[n] for n in sorted(PATCHES)]


def apply_patches(model: Any, names: Iterable[str], ctx: PatchContext | None = None
                  ) -> tuple[Any, list[PassRecord]]:
    """Apply the named patches in the order given (a pass set's order) to an onnx.ModelProto
    through vlc's pass runner; the new model (checked by onnx.checker) and one record per patch."""
    import onnx

    ctx = ctx or PatchContext()
    model, records = run_passes(model, [get_patch(n) for n in names], ctx)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InputError(f"the patched graph fails onnx.checker: {first_line(exc, limit=300)}",
                         fix="report it; rerun with -O patches=none to compile the graph unpatched") from None
    return model, records


def context_from_metadata(model: Any) -> PatchContext:
    """The context of a patch run as a plain graph pass (`vlc export --passes`): CANN and
    batch from the model's metadata when set, else CANN 6 rules and dynamic batch."""
    meta = {p.key: p.value for p in model.metadata_props}
    cann = int(meta.get(META_CANN, 6))
    batch = int(meta[META_BATCH]) if META_BATCH in meta else None
    return PatchContext(cann=cann, batch=batch)
