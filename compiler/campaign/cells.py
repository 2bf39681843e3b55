"""Campaign cells and what travels to the node that measures them.

A cell is one model x target variant x precision of a `[[run]]`; its batch sizes are measured
inside it. The front end runs once per model on the driver; `ShippedModel` carries its
normalized graph as bytes (a path on the driver means nothing on another node), the generated
inputs and the reference outputs of every batch, so each node checks accuracy against the
same reference `vlc bench` uses (the PyTorch model when there is one) without the model's code.
`measure_cell` runs on the node: it is `vlc bench`'s Bench for one variant and precision
against the shipped graph, and returns the records instead of writing them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vlc.bench.runner import Bench, BenchConfig, validate_config
from vlc.bench.variants import TargetVariant
from vlc.model import InputSpec
from vlc.records import BenchRecord, write_record
from vlc.target import CompileSource
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
    requires: dict[str, float] = field(default_factory=dict)
    device: str | None = None
    seed: int = 0

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
    def from_source(cls, source: CompileSource, bench: Bench, batches: list[int]) -> "ShippedModel":
        """The driver's side: the graph's bytes, inputs and references of `batches` (via `bench`,
        so they are computed exactly as `vlc bench` computes them)."""
        from vlc.onnx_files import external_data_locations

        onnx_path = Path(source.onnx_path)
        files = {"model.onnx": onnx_path.read_bytes()}
        for location in external_data_locations(onnx_path):
            files[location] = (onnx_path.parent / location).read_bytes()
        return cls(name=source.name, ref=source.ref, source_hash=bench.source_hash,
                   input_specs=list(source.input_specs), frontend=dict(source.frontend), files=files,
                   reference_kind=bench.reference_kind, has_model=source.model is not None,
                   feeds={b: bench.feeds(b) for b in batches}, reference={b: bench.reference(b) for b in batches})

    def materialize(self, root: Path) -> "ShippedSource":
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
    return bool(getattr(variant.target, "needs_model", variant.target.name == "torch"))


def _load_model(source: ShippedSource, variant: TargetVariant) -> str | None:
    """Give `source` the model for targets that need it; the reason when this node cannot."""
    if not needs_model(variant):
        return None
    from vlc.errors import first_line
    from vlc.frontend.loader import load_model
    from vlc.model import ModelSource

    try:
        loaded = load_model(source.ref)
    except Exception as exc:  # noqa: BLE001 - a node without the model's code: the cell says so
        return f"cannot load the model {source.ref} on this node: {first_line(exc)}"
    if isinstance(loaded, ModelSource):
        source.model = loaded
    return None


def worker_dir(node: str) -> Path:
    """This node's campaign folder (graphs and artifacts), in vlc's cache."""
    from vlc.frontend.pipeline import default_cache_dir

    return default_cache_dir() / "campaign" / (node[:16] or "local")


def measure_cell(shipped: ShippedModel, cell: Cell, previous: list[dict[str, Any]], node: str) -> dict[str, Any]:
    """Build and measure one cell here; `previous` are its earlier records (any machine), so a
    finished cell is skipped exactly as `vlc bench` skips it. Returns the records as JSON."""
    work = worker_dir(node)
    source = shipped.materialize(work / "graphs")
    with tempfile.TemporaryDirectory(prefix="vlc-cell-") as scratch:
        results = Path(scratch)
        for data in previous:  # bench's own resume check reads them from its results folder
            write_record(results, BenchRecord.from_json(data))
        config = BenchConfig(model=shipped.ref, targets=[cell.entry], precisions=[cell.precision],
                             batches=list(cell.batches), results=results, artifacts=work / "artifacts",
                             settings=cell.settings, device=cell.device,
                             machine=os.environ.get(MACHINE_ENV) or None, seed=cell.seed)
        variants = validate_config(config)
        bench = ShippedBench(config, source, variants, shipped, node)
        problem = _load_model(source, variants[0]) if shipped.has_model else None
        if problem is None:
            summary = bench.run()
        else:
            summary = bench.summary
            for precision in bench.precisions:
                for batch in bench.batches:
                    device = bench._device(variants[0].target, [])
                    bench.write(bench._base(variants[0], precision, batch, device, "unavailable", reason=problem),
                                "unavailable")
    return {"machine": bench.machine, "node": node,
            "written": [r.to_json() for r in summary.written],
            "skipped": [r.to_json() for r in summary.skipped]}
