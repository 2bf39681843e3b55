"""Campaign cells and what travels to the node that measures them.

A cell is one model x target variant x precision of a `[[run]]`; its batch sizes are measured
inside it. The front end runs once per model on the driver; `ShippedModel` carries its
normalized graph as bytes (a path on the driver means nothing on another node), the generated
inputs and the reference outputs of every batch, so each node checks accuracy against the
same reference `vlc bench` uses (the PyTorch model when there is one) without the model's code.
`measure_cell` runs on the node: it is `vlc bench`'s Bench for one variant and precision
against the shipped graph, and returns the records instead of writing them.

A cell whose run has `build_requires` (TensorRT-RTX by default) may be compiled on one node and
timed on another: `build_cell` compiles it where the toolchain is and returns the packed
artifact with its 'built' records (vlc.campaign.builds), `measure_built` times that artifact
where the hardware is. `build_here` is the compile step both the cluster and a machine
without the device (`vlc campaign run` with no cluster) use.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vlc.artifact import Artifact
from vlc.bench.runner import Bench, BenchConfig, validate_config
from vlc.bench.variants import TargetVariant
from vlc.campaign import builds
from vlc.errors import InputError, TargetUnavailable, first_line
from vlc.frontend.loader import load_model
from vlc.frontend.pipeline import default_cache_dir
from vlc.model import InputSpec, ModelSource
from vlc.onnx_files import external_data_locations
from vlc.records import BenchRecord, write_record
from vlc.spec import Precision, TargetSpec
from vlc.target import Availability, CompileSource
from vlc.timing import ProfileSettings

MACHINE_ENV = "VLC_MACHINE"  # set by `vlc worker start --machine NAME`: the machine name in records


@dataclass(frozen=True)
class Cell:
    run: int  # the [[run]] table's position in the file
    model: str  # the model entry as the front end takes it
    entry: str  # the target variant, e.g. torch:mode=compile
    label: str  # what records call the target
    precision: str
    batches: tuple[int, ...]
    settings: ProfileSettings
    requires: dict[str, float] = field(default_factory=dict)  # where it is measured
    device: str | None = None
    seed: int = 0
    build_requires: dict[str, float] = field(default_factory=dict)  # where it may be compiled; {}: where measured

    def describe(self) -> str:
        return f"{self.label} {self.precision}"


@dataclass
class ShippedModel:
    """A prepared model as bytes and arrays: everything a node needs to build and check it."""

    name: str
    ref: str
    source_hash: str
    input_specs: list[InputSpec]
    frontend: dict[str, Any]
    files: dict[str, bytes]  # "model.onnx" and its external-data files by relative location
    reference_kind: str
    has_model: bool  # a PyTorch model (its ref loads it where its code is), not an ONNX file
    feeds: dict[int, dict[str, np.ndarray]]
    reference: dict[int, dict[str, np.ndarray]]

    @classmethod
    def from_source(cls, source: CompileSource, bench: Bench, batches: list[int]) -> ShippedModel:
        """The driver's side: the graph's bytes, inputs and references of `batches` (via `bench`,
        so they are computed exactly as `vlc bench` computes them)."""
        onnx_path = Path(source.onnx_path)
        files = {"model.onnx": onnx_path.read_bytes()}
        for location in external_data_locations(onnx_path):
            files[location] = (onnx_path.parent / location).read_bytes()
        return cls(name=source.name, ref=source.ref, source_hash=bench.source_hash,
                   input_specs=list(source.input_specs), frontend=dict(source.frontend), files=files,
                   reference_kind=bench.reference_kind, has_model=source.model is not None,
                   feeds={b: bench.feeds(b) for b in batches}, reference={b: bench.reference(b) for b in batches})

    def materialize(self, root: Path) -> ShippedSource:
        """The node's side: the graph written under `root` (once per graph), as a CompileSource."""
        folder = root / self.source_hash[:16]
        onnx_path = folder / "model.onnx"
        if not onnx_path.is_file() or _digest(onnx_path) != _digest_bytes(self.files["model.onnx"]):
            folder.mkdir(parents=True, exist_ok=True)
            for location, data in self.files.items():
                rel = PurePosixPath(location)
                if rel.is_absolute() or ".." in rel.parts:  # locations were checked by the front end
                    raise ValueError(f"external data outside the graph's folder: {location}")
                _write_atomic(folder / rel, data)
        return ShippedSource(onnx_path=onnx_path, ref=self.ref, input_specs=self.input_specs,
                             frontend=self.frontend, shipped_name=self.name)


@dataclass
class ShippedSource(CompileSource):
    """A CompileSource without the model's code: named as the driver's model."""

    shipped_name: str = ""

    @property
    def name(self) -> str:
        return self.shipped_name


def _digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest(path: Path) -> str:
    return _digest_bytes(path.read_bytes())


def _write_atomic(path: Path, data: bytes) -> None:
    # several workers of one host may materialize the same graph at once
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ShippedBench(Bench):
    """`vlc bench`'s sweep over a shipped graph: inputs and references come with it, records
    name the node."""

    def __init__(self, config: BenchConfig, source: ShippedSource, targets: list[TargetVariant],
                 shipped: ShippedModel, node: str):
        super().__init__(config, source, targets)
        self.node = node
        self._feeds.update(shipped.feeds)
        self._reference.update(shipped.reference)
        self._kind = shipped.reference_kind

    @property
    def reference_kind(self) -> str:
        return self._kind

    def _base(self, *args: Any, **fields: Any) -> BenchRecord:
        record = super()._base(*args, **fields)
        record.node = self.node
        return record


def needs_model(variant: TargetVariant) -> bool:
    """Targets that build from the PyTorch model itself, not the graph (their sessions re-create it
    from its ref too): the model's code must be importable on the node."""
    return variant.target.capabilities.needs_model


def _load_model(source: ShippedSource, variant: TargetVariant) -> str | None:
    """Give `source` the model for targets that need it; the reason when this node cannot."""
    if not needs_model(variant):
        return None

    try:
        loaded = load_model(source.ref)
    except Exception as exc:  # noqa: BLE001 - a node without the model's code: the cell says so
        return f"cannot load the model {source.ref} on this node: {first_line(exc)}"
    if isinstance(loaded, ModelSource):
        source.model = loaded
    return None


def worker_dir(node: str) -> Path:
    """This node's campaign folder (graphs and artifacts), in vlc's cache."""
    return default_cache_dir() / "campaign" / (node[:16] or "local")


def _cell_bench(shipped: ShippedModel, cell: Cell, node: str, results: Path) -> ShippedBench:
    """`vlc bench`'s sweep of this one cell on this node, over the shipped graph."""
    work = worker_dir(node)
    source = shipped.materialize(work / "graphs")
    config = BenchConfig(model=shipped.ref, targets=[cell.entry], precisions=[cell.precision],
                         batches=list(cell.batches), results=results, artifacts=work / "artifacts",
                         settings=cell.settings, device=cell.device,
                         machine=os.environ.get(MACHINE_ENV) or None, seed=cell.seed)
    return ShippedBench(config, source, validate_config(config), shipped, node)


def measure_cell(shipped: ShippedModel, cell: Cell, previous: list[dict[str, Any]], node: str) -> dict[str, Any]:
    """Build and measure one cell here; `previous` are its earlier records (any machine), so a
    finished cell is skipped exactly as `vlc bench` skips it. Returns the records as JSON."""
    with tempfile.TemporaryDirectory(prefix="vlc-cell-") as scratch:
        results = Path(scratch)
        for data in previous:  # bench's own resume check reads them from its results folder
            write_record(results, BenchRecord.from_json(data))
        bench = _cell_bench(shipped, cell, node, results)
        variant = bench.targets[0]
        problem = _load_model(bench.source, variant) if shipped.has_model else None  # type: ignore[arg-type]
        if problem is None:
            summary = bench.run()
        else:
            summary = bench.summary
            for precision in bench.precisions:
                for batch in bench.batches:
                    device = bench._device(variant.target, [])
                    bench.write(bench._base(variant, precision, batch, device, "unavailable", reason=problem),
                                "unavailable")
    return {"machine": bench.machine, "node": node,
            "written": [r.to_json() for r in summary.written],
            "skipped": [r.to_json() for r in summary.skipped]}


# ---- compiled on one node, timed on another ------------------------------------------------------

NOT_TIMED = "not timed yet"  # a 'built' record's reason until the driver knows why it stays untimed


def _status(variant: TargetVariant) -> Availability:
    try:
        return variant.target.available()
    except Exception as exc:  # noqa: BLE001 - a broken probe makes the target unavailable, not the cell
        return Availability(False, f"its availability check failed: {first_line(exc, with_type=True)}")


def target_device(bench: Bench, variant: TargetVariant) -> tuple[Availability, str]:
    """The target's availability here and the device `vlc bench` would give the cell."""
    status = _status(variant)
    return status, bench._device(variant.target, list(status.devices))


def device_missing(bench: Bench, variant: TargetVariant) -> str | None:
    """Why this machine can build the cell's artifact but not time it (its device is not here),
    or None when it can do both or neither."""
    status, device = target_device(bench, variant)
    if not status.ok or device in status.devices or device not in variant.target.devices:
        return None
    return f"target '{variant.target.name}' finds no '{device}' device on {bench.machine}"


def _preset_device(variant: TargetVariant, artifact: Artifact) -> str:
    """What a built record names as its device: the preset's GPU the artifact was built for."""
    preset = variant.target.presets.get(artifact.manifest.preset or "") or {}
    name = preset.get("gpu") or artifact.manifest.preset or artifact.manifest.target
    return f"{name} (build target)"


def artifact_info(artifact: Artifact, versions: dict[str, str]) -> dict[str, Any]:
    """A record's `artifact`, as `vlc bench` writes it."""
    manifest = artifact.manifest
    return {"path": str(artifact.path), "build_seconds": manifest.build_seconds,
            "cache": manifest.cache, "spec": manifest.spec.to_json(),
            "tool_versions": {**versions, **manifest.tool_versions}}


@dataclass
class Built:
    """A cell compiled here: its artifact and its 'built' records (one per batch), or the
    unavailable/failed records when it could not be built."""

    artifact: Artifact | None
    records: list[BenchRecord]
    facts: dict[str, Any] = field(default_factory=dict)


def build_here(bench: Bench, variant: TargetVariant, precision: Precision, node: str = "") -> Built:
    """Compile the cell as `vlc bench` compiles it (same spec, same artifact folder), without
    timing it; the records say 'built' with the build's facts."""
    target = variant.target
    status, device = target_device(bench, variant)
    reason = bench._unavailable_reason(target, status, precision, device, emit=True)  # precision, device kind
    if reason is None and not status.ok:
        reason = f"target '{target.name}' cannot build here: {status.reason}"
    if reason is not None:
        return Built(None, [bench._base(variant, precision, b, device, "unavailable", reason=reason)
                            for b in bench.batches])
    spec = TargetSpec(target=target.name, precision=precision, device=device,
                      batch=bench._batch_range() if bench._dynamic_batch() else None,
                      options=bench._options(variant))
    bench.note(f"{variant.label} {precision.value}: compiling")
    try:
        artifact = target.compile(bench.source, spec, bench._artifact_dir(variant, spec))
    except (TargetUnavailable, InputError) as exc:  # the target says it cannot do this here
        return Built(None, [bench._base(variant, precision, b, device, "unavailable",
                                        reason=first_line(exc, with_type=True)) for b in bench.batches])
    except Exception as exc:  # noqa: BLE001 - one cell's failure never stops the campaign
        return Built(None, [bench._base(variant, precision, b, device, "failed",
                                        reason=f"compile failed: {first_line(exc, with_type=True)}")
                            for b in bench.batches])
    facts = builds.build_facts(artifact, machine=bench.machine, node=node, host=bench.env.get("host", ""))
    info = artifact_info(artifact, dict(status.versions))
    return Built(artifact, [bench._base(variant, precision, b, device, "built", reason=NOT_TIMED, build=facts,
                                        artifact=info, device_name=_preset_device(variant, artifact))
                            for b in bench.batches], facts)


def build_cell(shipped: ShippedModel, cell: Cell, node: str) -> dict[str, Any]:
    """On a node with the toolchain: compile the cell; the packed artifact and its 'built'
    records, or the records saying why it could not be built."""
    with tempfile.TemporaryDirectory(prefix="vlc-cell-") as scratch:
        bench = _cell_bench(shipped, cell, node, Path(scratch))
        built = build_here(bench, bench.targets[0], bench.precisions[0], node)
    outcome: dict[str, Any] = {"machine": bench.machine, "node": node, "facts": built.facts,
                               "records": [r.to_json() for r in built.records]}
    if built.artifact is not None:
        outcome["artifact"] = builds.pack(built.artifact.path)
    return outcome


def measure_built(shipped: ShippedModel, cell: Cell, packed: bytes, facts: dict[str, Any],
                  node: str) -> dict[str, Any]:
    """On a node with the hardware: time an artifact built elsewhere, each batch checked against
    the shipped reference first, as `vlc bench` does. `not_timed` says why when this node cannot."""
    with tempfile.TemporaryDirectory(prefix="vlc-cell-") as scratch:
        bench = _cell_bench(shipped, cell, node, Path(scratch))
        variant, precision = bench.targets[0], bench.precisions[0]
        status, device = target_device(bench, variant)
        reason = bench._unavailable_reason(variant.target, status, precision, device, emit=False)
        if reason is None and shipped.has_model:
            reason = _load_model(bench.source, variant)  # type: ignore[arg-type]
        if reason is not None:
            return {"machine": bench.machine, "node": node, "not_timed": reason, "written": []}
        where = worker_dir(node) / "built" / f"{shipped.source_hash[:12]}-{_safe_name(variant.label)}-{precision.value}"
        try:
            artifact = builds.unpack(packed, where)
        except Exception as exc:  # noqa: BLE001 - a damaged transfer is this cell's failure
            records = [bench._base(variant, precision, b, device, "failed", reason=first_line(exc, with_type=True),
                                   build=facts) for b in bench.batches]
        else:
            records = [bench._measure_cell(variant, artifact, precision, device, b, dict(status.versions))
                       for b in bench.batches]
            for record in records:
                record.build = facts
    return {"machine": bench.machine, "node": node, "not_timed": None, "written": [r.to_json() for r in records]}


def _safe_name(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", text).strip("._") or "_"
