"""Sizes for dynamic input dimensions the user gave no range for.

TensorRT needs a shape range for every dynamic axis and ATC a size; a model file often leaves
them open (`batch`, `height`, `-1`). Like trtexec and Polygraphy, vlc then builds for one shape,
but one the graph accepts: size 1 fails for strided convolutions, detectors' concatenations and
reshapes. The batch axis gets `--batch` (else 1); every other dynamic dim gets the first candidate
size under which the graph runs once in ONNX Runtime on the CPU with generated inputs. The same
dim name gets the same size on every input. The choice is never silent: one warning line names
every choice and how to override it, and the caller records it in the manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import InputError
from vlc.model import BATCH as BATCH_NAME
from vlc.model import InputSpec, specs_from_signature
from vlc.signature import Signature, TensorSig
from vlc.spec import ShapeRange, TargetSpec

log = logging.getLogger("vlc")

# Tried in order; image-like spatial axes start at the usual 224 (a 1x1 image runs many
# classifiers but is no shape anyone deploys), other axes from the smallest size up.
CANDIDATES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 224, 256, 320, 512, 640)
SPATIAL_FIRST: tuple[int, ...] = (224, 256, 320, 512, 640, 128, 64, 32, 16, 8, 4, 2, 1)


@dataclass(frozen=True)
class DimSlot:
    """One dynamic dim to size: its name (shared across inputs) and where it occurs."""

    name: str
    places: tuple[tuple[str, int], ...]  # (input, axis)
    spatial: bool  # an H/W axis of a 4-D float input

    def label(self) -> str:
        return f"'{self.name}'"


def batch_dim_names(signature: Signature) -> set[str]:
    """Dim names on axis 0 of any input: the batch, wherever else the same name occurs."""
    return {t.shape[0] for t in signature.inputs if t.shape and isinstance(t.shape[0], str)}


def _needs_choice(sig: TensorSig, spec: TargetSpec, batch_names: set[str],
                  default_batches: Sequence[int] | None) -> bool:
    """Whether the builder would find no range for this input without vlc's choice."""
    if sig.name in spec.shapes:
        return False
    dynamic = [axis for axis, d in enumerate(sig.shape) if isinstance(d, str)]
    if any(axis != 0 for axis in dynamic):  # a size, or the batch off axis 0 (a state [2, batch, 128])
        return True
    return bool(dynamic) and not spec.batch and not default_batches


def dim_slots(inputs: list[TensorSig], batch_names: set[str]) -> list[DimSlot]:
    places: dict[str, list[tuple[str, int]]] = {}
    spatial: dict[str, bool] = {}
    for sig in inputs:
        image = len(sig.shape) == 4 and sig.dtype in ("float32", "float16")
        for axis, d in enumerate(sig.shape):
            if isinstance(d, str) and d not in batch_names:
                places.setdefault(d, []).append((sig.name, axis))
                spatial[d] = spatial.get(d, False) or (image and axis >= 2)
    return [DimSlot(name, tuple(where), spatial[name]) for name, where in places.items()]


def _shape(sig: TensorSig, sizes: Mapping[str, int], batch_names: set[str], batch: int) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else batch if d in batch_names else sizes[d] for d in sig.shape)


def generate_feeds(signature: Signature, shapes: Mapping[str, tuple[int, ...]],
                   input_specs: Sequence[InputSpec] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the given concrete shapes, valued as vlc generates them (int inputs in their
    specs' ranges); inputs not in `shapes` keep their fixed shape."""
    by_name = {s.name: s for s in (input_specs or ())}
    defaults = {s.name: s for s in specs_from_signature(signature.inputs)}
    rng = np.random.default_rng(seed)
    feeds = {}
    for sig in signature.inputs:
        base = by_name.get(sig.name) or defaults[sig.name]
        shape = shapes.get(sig.name) or tuple(d if isinstance(d, int) else 1 for d in sig.shape)
        feeds[sig.name] = replace(base, shape=tuple(shape)).generate(1, rng)
    return feeds


class TrialRunner:
    """The graph in ONNX Runtime on the CPU, loaded once and run per candidate."""

    def __init__(self, onnx_path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # a failing candidate is expected, not news
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def accepts(self, feeds: Mapping[str, np.ndarray]) -> str | None:
        """None when the graph runs on `feeds`, else the first line of ONNX Runtime's error."""
        try:
            self.session.run(None, dict(feeds))
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors are all "this shape fails"
            return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return None


def choose_shapes(onnx_path: str | Path, signature: Signature, spec: TargetSpec, *,
                  input_specs: Sequence[InputSpec] | None = None,
                  default_batches: Sequence[int] | None = None) -> tuple[dict[str, ShapeRange], list[str]]:
    """Shape ranges for the inputs whose dynamic dims have no range from --shapes/--batch/the model.

    Returns ({input: ShapeRange}, notes): one note per input sized, plus how it was checked.
    Inputs given in spec.shapes are never touched; an empty dict means nothing was chosen.
    """
    batch_names = batch_dim_names(signature)
    todo = [s for s in signature.inputs if _needs_choice(s, spec, batch_names, default_batches)]
    if not todo:
        return {}, []
    lo, opt, hi = spec.batch or (1, 1, 1)
    known = {**_spec_sizes(signature, input_specs, batch_names), **_given_sizes(signature, spec, batch_names)}
    slots = [s for s in dim_slots(todo, batch_names) if s.name not in known]
    fixed_others = {s.name: _fixed_shape(s, spec, batch_names, opt) for s in signature.inputs if s not in todo}
    sizes, how = _search(Path(onnx_path), signature, todo, slots, batch_names, opt, fixed_others, input_specs,
                         known)
    sizes = {**known, **sizes}
    chosen: dict[str, ShapeRange] = {}
    notes: list[str] = []
    for sig in todo:
        shapes = [_shape(sig, sizes, batch_names, b) for b in (lo, opt, hi)]
        chosen[sig.name] = ShapeRange(*shapes)
        notes.append(f"{sig.name} {_text(sig, chosen[sig.name], sizes, batch_names)}")
    if how:
        notes.append(how)
    return chosen, notes


def _given_sizes(signature: Signature, spec: TargetSpec, batch_names: set[str]) -> dict[str, int]:
    """Dim names --shapes already sizes (their opt size), so other inputs with them agree."""
    sizes: dict[str, int] = {}
    for sig in signature.inputs:
        if sig.name in spec.shapes:
            for axis, d in enumerate(sig.shape):
                if isinstance(d, str) and d not in batch_names:
                    sizes.setdefault(d, spec.shapes[sig.name].opt[axis])
    return sizes


def _spec_sizes(signature: Signature, input_specs: Sequence[InputSpec] | None,
                batch_names: set[str]) -> dict[str, int]:
    """Sizes the input specs hold for dynamic dims (the front end found them for an ONNX file:
    the inputs every other step generates have them), so builds take the same shapes."""
    by_name = {s.name: s for s in input_specs or ()}
    sizes: dict[str, int] = {}
    for sig in signature.inputs:
        spec = by_name.get(sig.name)
        if spec is None or len(spec.shape) != len(sig.shape):
            continue
        for d, size in zip(sig.shape, spec.shape):
            if isinstance(d, str) and d not in batch_names and isinstance(size, int):
                sizes.setdefault(d, size)
    return sizes


def _fixed_shape(sig: TensorSig, spec: TargetSpec, batch_names: set[str], batch: int) -> tuple[int, ...]:
    """An input vlc does not size: its --shapes opt, else its shape with the batch filled in."""
    if sig.name in spec.shapes:
        return spec.shapes[sig.name].opt
    return tuple(d if isinstance(d, int) else batch for d in sig.shape)


def dim_candidates(slot: DimSlot) -> tuple[int, ...]:
    return SPATIAL_FIRST if slot.spatial else CANDIDATES


def size_trials(slots: list[DimSlot], known: Mapping[str, int]) -> Iterator[dict[str, int]]:
    """Size sets to try: the k-th candidate of every dim at once (an image's H and W), then one
    dim at a time through its candidates with the others at their first (a length beside a state
    whose other dim must stay 1)."""
    for k in range(len(CANDIDATES)):
        yield {**known, **{s.name: dim_candidates(s)[k] for s in slots}}
    if len(slots) > 1:
        first = {s.name: dim_candidates(s)[0] for s in slots}
        for slot in slots:
            for size in dim_candidates(slot)[1:]:
                yield {**known, **first, slot.name: size}


def _search(onnx_path: Path, signature: Signature, todo: list[TensorSig], slots: list[DimSlot],
            batch_names: set[str], batch: int, others: dict[str, tuple[int, ...]],
            input_specs: Sequence[InputSpec] | None, known: Mapping[str, int]) -> tuple[dict[str, int], str]:
    """The first candidate sizes (the k-th candidate of every dim at once) the graph runs with;
    `known`: sizes --shapes gave, kept."""
    if not slots:
        return {}, ""
    try:
        runner = TrialRunner(onnx_path)
    except Exception as exc:  # noqa: BLE001 - a graph ONNX Runtime cannot load is checked by nobody
        sizes = {s.name: dim_candidates(s)[0] for s in slots}
        return sizes, f"unchecked: ONNX Runtime cannot load the graph ({str(exc).splitlines()[0][:120]})"
    errors = []
    for tried, sizes in enumerate(size_trials(slots, known), start=1):
        shapes = {**others, **{t.name: _shape(t, sizes, batch_names, batch) for t in todo}}
        error = runner.accepts(generate_feeds(signature, shapes, input_specs))
        if error is None:
            return ({s.name: sizes[s.name] for s in slots},
                    f"checked by running the graph in ONNX Runtime ({tried} size sets tried)")
        errors.append(error)
    dims = ", ".join(f"{s.label()} of {', '.join(f'{i} axis {a}' for i, a in s.places)}" for s in slots)
    raise InputError(f"no size vlc tried for the dynamic dims {dims} runs the graph in ONNX Runtime "
                     f"({', '.join(map(str, CANDIDATES))}; first error: {errors[0]})",
                     where=str(onnx_path),
                     fix="give the shapes with --shapes NAME:MIN,OPT,MAX for "
                         + ", ".join(t.name for t in todo))


def _text(sig: TensorSig, rng: ShapeRange, sizes: Mapping[str, int], batch_names: set[str]) -> str:
    """`1x3x224x224 (batch 1, 'h'=224, 'w'=224)`, or the min,opt,max text for a batch range."""
    shape = "x".join(map(str, rng.opt)) if rng.min == rng.max else rng.text()
    parts = []
    for axis, d in enumerate(sig.shape):
        if isinstance(d, str):
            if d in batch_names:
                lo, hi = rng.min[axis], rng.max[axis]
                parts.append(f"batch {lo}" if lo == hi else f"batch {lo}..{hi}")
            else:
                parts.append(f"'{d}'={sizes[d]}")
    return f"{shape} ({', '.join(dict.fromkeys(parts))})"


def warning_line(chosen: Mapping[str, ShapeRange], notes: Sequence[str]) -> str:
    """The one line that says what vlc chose and how to choose otherwise."""
    first, rng = next(iter(chosen.items()))
    example = "x".join(map(str, rng.opt)) if rng.min == rng.max else rng.text()
    return (f"dynamic dims with no size given; vlc chose {'; '.join(notes)}. Override with "
            f"--shapes NAME:MIN,OPT,MAX (e.g. --shapes {first}:{example}) or --batch MIN,OPT,MAX")


def record(chosen: Mapping[str, ShapeRange], notes: Sequence[str], extra: dict[str, Any],
           log_line: Any = None) -> str | None:
    """Warn once and record the choice under extra['shape_choice'] (the manifest); the warning line."""
    if not chosen:
        return None
    line = warning_line(chosen, notes)
    log.warning(line)
    if log_line is not None:
        log_line(f"[vlc] {line}")
    extra["shape_choice"] = {"chosen_by": "vlc", "shapes": {k: v.to_json() for k, v in chosen.items()},
                             "notes": list(notes)}
    extra.setdefault("warnings", []).append(line)
    return line


def at_batch(signature: Signature, ranges: Mapping[str, ShapeRange], batch: int) -> dict[str, tuple[int, ...]]:
    """The ranges' opt shapes with every batch dim set to `batch` (one static build per batch);
    fixed axes keep their size."""
    batch_names = batch_dim_names(signature)
    shapes = {}
    for sig in signature.inputs:
        if sig.name in ranges:
            opt = ranges[sig.name].opt
            shapes[sig.name] = tuple(batch if isinstance(d, str) and d in batch_names else size
                                     for d, size in zip(sig.shape, opt))
    return shapes


def sized_spec(onnx_path: str | Path, signature: Signature, spec: TargetSpec, *,
               input_specs: Sequence[InputSpec] | None = None, batches: Sequence[int] | None = None,
               extra: dict[str, Any] | None = None, log_line: Any = None
               ) -> tuple[TargetSpec, dict[str, ShapeRange], str | None]:
    """For targets that build per batch (ATC): the spec with sizes for the non-batch dynamic dims
    nobody gave (warned once, recorded in `extra`), and what was chosen. The batch axis is left
    to `batches` (the builds' batch sizes): the chosen ranges hold batch 1, each build sets its own.
    Returns (spec, chosen, the warning line or None)."""
    sizes = sorted(batches or (1,))
    chosen, notes = choose_shapes(onnx_path, signature, replace(spec, batch=(sizes[0],) * 3),
                                  input_specs=input_specs, default_batches=sizes)
    if not chosen:
        return spec, {}, None
    if len(sizes) > 1:
        notes.append(f"each build sets the batch to its own size ({', '.join(map(str, sizes))})")
    line = record(chosen, notes, extra if extra is not None else {}, log_line)
    return replace(spec, shapes={**spec.shapes, **chosen}), chosen, line


def from_user_inputs(signature: Signature, spec: TargetSpec, feeds: Mapping[str, np.ndarray],
                     input_specs: Sequence[InputSpec]) -> tuple[TargetSpec, list[InputSpec], str | None]:
    """The user's inputs (`vlc compile --input`) size the dynamic dims nobody gave a range for:
    without --batch each such input builds for exactly its shape (min = opt = max); with --batch
    its other dynamic dims take the input's sizes. Returns (spec, input specs, a note or None)."""
    shapes = dict(spec.shapes)
    specs = list(input_specs)
    taken = []
    names = batch_dim_names(signature)
    for sig in signature.inputs:
        if sig.name in spec.shapes or sig.name not in feeds or all(isinstance(d, int) for d in sig.shape):
            continue
        shape = tuple(int(d) for d in np.asarray(feeds[sig.name]).shape)
        if len(shape) != len(sig.shape):
            continue  # load_inputs has refused a wrong rank already; nothing to take
        if spec.batch is None:
            shapes[sig.name] = ShapeRange(shape, shape, shape)
            taken.append(f"{sig.name} {'x'.join(map(str, shape))}")
            continue
        sized = tuple(d if isinstance(d, int) or d in names else size for d, size in zip(sig.shape, shape))
        specs = [replace(s, shape=tuple(BATCH_NAME if isinstance(d, str) and d in names else n
                                        for d, n in zip(sig.shape, sized)))
                 if s.name == sig.name and len(s.shape) == len(sized) else s for s in specs]
        taken.append(f"{sig.name} sizes {'x'.join(str(n) for n in sized)}")
    note = f"shapes from the inputs given with --input: {'; '.join(taken)}" if taken else None
    return replace(spec, shapes=shapes), specs, note
