"""`vlc bench`: one model, many targets x precisions x batch sizes, one record per cell.

The model is exported once (vlc.frontend.pipeline.prepare); each target x precision is
compiled once; every batch size is checked against the reference model (the PyTorch model
when there is one, else the fp32 ONNX graph in ONNX Runtime) and then profiled. Each cell's
record is written as soon as it is done, so an interrupted sweep resumes where it stopped:
a cell whose record already says "ok" is skipped when everything that decides its numbers is
unchanged (`resume_key`: the timing settings, device, transfers, graph, target options, seed,
vlc version, source-graph hash and machine); otherwise it is measured again and the progress
line says which setting changed. Each cell opens its artifact once: the accuracy run and the
timing share one session. Cells this machine cannot run are recorded as
"unavailable" with the reason; targets asked for with --emit write deploy bundles instead
(through `Target.emit_bundle` where the target declares Capabilities(bundles=True)): by default those
unavailable here, and those that can run but not build here.

A --targets entry may carry target options (`torch:mode=compile`, vlc.bench.variants); the
records name the target by that label, so variants are separate cells and report columns.
With `graph="raw"` the sweep measures the plain exporter output (no simplifier, no passes)
and every label gets the suffix "@raw".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlc import environment as environ
from vlc.accuracy import compare_outputs, default_tolerance
from vlc.artifact import Artifact, graph_hash
from vlc.bench.variants import TargetVariant, resolve
from vlc.errors import InputError, TargetUnavailable, first_line
from vlc.flops import FlopCount
from vlc.frontend.pipeline import FrontendOptions
from vlc.frontend.pipeline import prepare as frontend_prepare
from vlc.measure import (
    BUNDLE_CELL,
    REFERENCE_ONNX,
    REFERENCE_TORCH,
    accuracy_of,
    flop_count,
    make_record,
    profile_settings,
    reference_outputs,
)
from vlc.records import BenchRecord, RecordError, read_record, record_path, write_record
from vlc.spec import Precision, TargetSpec
from vlc.target import Availability, CompileSource, Target
from vlc.timing import ProfileSettings


@dataclass
class BenchConfig:
    model: str
    targets: list[str]  # entries: a target name, optionally with options (torch:mode=compile)
    precisions: list[str]
    batches: list[int] | None = None  # None: the model's own batch sizes
    results: Path = Path("results")
    artifacts: Path = Path(".vlc/bench")
    emit: Path | None = None  # where deploy bundles go
    emit_targets: list[str] | None = None  # None with emit: every target that cannot run here but can emit
    settings: ProfileSettings = field(default_factory=ProfileSettings)
    device: str | None = None  # None: the target's accelerator when this machine has one, else cpu
    machine: str | None = None  # None: the host name
    force: bool = False  # redo finished cells
    seed: int = 0
    cache_dir: Path | None = None  # front-end cache
    graph: str = "normalized"  # or "raw": the exporter's output, no simplifier and no passes


@dataclass
class BenchSummary:
    model: str
    machine: str
    results: Path
    written: list[BenchRecord] = field(default_factory=list)
    skipped: list[BenchRecord] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[BenchRecord]:
        return [r for r in self.written if r.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "machine": self.machine, "results": str(self.results),
                "written": [str(p) for p in self.paths], "skipped": len(self.skipped),
                "cells": [_row(r, skipped=False) for r in self.written]
                + [_row(r, skipped=True) for r in self.skipped]}


def _row(r: BenchRecord, *, skipped: bool) -> dict[str, Any]:
    return {"target": r.target, "precision": r.precision, "batch": r.batch, "status": r.status,
            "skipped": skipped, "median_ms": r.median_ms, "throughput_per_s": r.throughput_per_s,
            "accuracy_passed": None if r.accuracy is None else r.accuracy.passed,
            "utilisation": r.utilisation, "reason": r.reason, "bundle": r.bundle}


Progress = Callable[[str, int, int], None]  # (what is happening, cells finished, cells in all)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", text).strip("._") or "_"


def _one_line(exc: BaseException) -> str:
    return first_line(exc, with_type=True)


# What decides a cell's numbers besides its place (model, target label, precision, batch):
# resume keeps a record only when all of these are equal. Names as the progress line says them.
_RESUMED_SETTINGS = (("iterations", "iterations"), ("warm-up", "warmup"), ("warm-up seconds", "warmup_s"),
                     ("duration", "duration_s"), ("transfers", "include_transfers"),
                     ("CUDA graph", "cuda_graph"), ("per-layer", "per_layer"), ("graph", "graph"),
                     ("seed", "seed"), ("vlc version", "vlc_version"))


def resume_key(record: BenchRecord) -> dict[str, Any]:
    """Everything that must be unchanged for a record to stand for a new measurement of its cell."""
    settings = record.settings
    key = {label: settings.get(name) for label, name in _RESUMED_SETTINGS}
    key.update({"device": record.device, "target options": settings.get("target_options") or {},
                "model hash": record.source_hash, "machine": record.machine, "target": record.target})
    return key


def settings_changes(old: BenchRecord, new: BenchRecord) -> list[str]:
    """'iterations 20 -> 50' for every resume-key entry that differs (hashes shortened)."""
    before, after = resume_key(old), resume_key(new)

    def shown(label: str, value: Any) -> str:
        return str(value)[:12] if label == "model hash" and value else json.dumps(value)

    return [f"{label} {shown(label, before[label])} -> {shown(label, after[label])}"
            for label in after if before.get(label) != after[label]]


def validate_config(config: BenchConfig) -> list[TargetVariant]:
    """Every user error before the (slow) export: unknown targets and precisions, bad sizes."""
    if not config.targets:
        raise InputError("no targets to bench", fix="pass --targets, e.g. --targets torch,onnxruntime")
    if not config.precisions:
        raise InputError("no precisions to bench", fix="pass --precisions, e.g. --precisions fp32,fp16")
    for p in config.precisions:
        Precision.parse(p)
    if config.batches is not None and (not config.batches or any(b < 1 for b in config.batches)):
        raise InputError(f"batch sizes must be positive, got {config.batches}", fix="e.g. --batch 1,8,32")
    variants = resolve(config.targets, config.graph)  # unknown targets, bad options, bad graph
    if config.emit_targets:
        unknown = sorted(n for n in config.emit_targets if not any(v.matches(n) for v in variants))
        if unknown:
            raise InputError(f"--emit-targets names {', '.join(unknown)}, which --targets does not",
                             fix="add them to --targets")
        if config.emit is None:
            raise InputError("--emit-targets needs --emit DIR", fix="say where the bundles go with --emit DIR")
        for v in variants:
            if any(v.matches(n) for n in config.emit_targets) and not v.target.capabilities.bundles:
                raise InputError(f"target '{v.target.name}' cannot write deploy bundles",
                                 fix="`vlc targets --json` lists the targets that can (bundles); bench it here instead")
    return variants


class Bench:
    """One sweep. Reference outputs and FLOP counts are computed once per batch size."""

    def __init__(self, config: BenchConfig, source: CompileSource, targets: list[TargetVariant],
                 progress: Progress = lambda text, done, total: None):
        self.config = config
        self.source = source
        self.targets = targets
        self.progress = progress
        self.env = environ.collect()
        self.machine = config.machine or self.env["host"]
        self.source_hash = graph_hash(source.onnx_path)
        model_batches = source.model.batch_sizes if source.model is not None else (1, 8)
        self.batches = list(dict.fromkeys(config.batches or model_batches))
        self.precisions = [Precision.parse(p) for p in dict.fromkeys(config.precisions)]
        self._feeds: dict[int, dict[str, np.ndarray]] = {}
        self._reference: dict[int, dict[str, np.ndarray]] = {}
        self._flops: dict[int, FlopCount | None] = {}
        self.summary = BenchSummary(source.name, self.machine, config.results)
        self.redo: dict[tuple[str, str, int], str] = {}  # cells measured again, and why
        self.total = len(targets) * len(self.precisions) * len(self.batches)

    def note(self, text: str) -> None:
        """Progress within a cell."""
        self.progress(text, len(self.summary.written) + len(self.summary.skipped), self.total)

    # ---- inputs, references, FLOPs (each once per batch) ------------------------------------
    @property
    def reference_kind(self) -> str:
        return REFERENCE_TORCH if self.source.model is not None else REFERENCE_ONNX

    def feeds(self, batch: int) -> dict[str, np.ndarray]:
        if batch not in self._feeds:
            self._feeds[batch] = self.source.generate_inputs(batch, seed=self.config.seed)
        return self._feeds[batch]

    def reference(self, batch: int) -> dict[str, np.ndarray]:
        if batch not in self._reference:
            model = self.source.model if self.source.model is not None else self.source.onnx_path
            # torch on the GPU when the sweep uses one: large batches take minutes on a CPU
            self._reference[batch] = reference_outputs(self.reference_kind, model, self.feeds(batch),
                                                       device=self._reference_device())
        return self._reference[batch]

    def _reference_device(self) -> str:
        if self.config.device == "cuda":
            import torch

            if torch.cuda.is_available():
                return "cuda"
        return "cpu"

    def flops(self, batch: int) -> FlopCount | None:
        if batch not in self._flops:
            self._flops[batch] = flop_count(self.source.onnx_path, batch)
        return self._flops[batch]

    # ---- records ----------------------------------------------------------------------------
    def _base(self, variant: TargetVariant, precision: Precision, batch: int, device: str, status: str,
              **fields: Any) -> BenchRecord:
        settings = profile_settings(self.config.settings, seed=self.config.seed, graph=self.config.graph)
        if variant.options:
            settings["target_options"] = dict(variant.options)
        return make_record(model=self.source.name, target=variant.label, precision=precision.value, batch=batch,
                           machine=self.machine, status=status, source_hash=self.source_hash,
                           model_ref=self.source.ref, device=device, env=self.env, settings=settings, **fields)

    def finished(self, variant: TargetVariant, precision: Precision, batch: int,
                 device: str) -> BenchRecord | None:
        """The cell's earlier record when it still stands for this sweep (resume); else None,
        with the reason to measure again in `self.redo` when there was a finished record."""
        if self.config.force:
            return None
        probe = self._base(variant, precision, batch, device, "ok")
        path = record_path(self.config.results, probe)
        if not path.is_file():
            return None
        try:
            old = read_record(path)
        except RecordError:
            return None  # unreadable: measure again and replace it
        if not (old.status == "ok" or (old.status == "emitted" and old.bundle and Path(old.bundle).exists())):
            return None  # unavailable, failed or a bundle that is gone: try again
        if changes := settings_changes(old, probe):
            self.redo[(variant.label, precision.value, batch)] = f"settings changed ({', '.join(changes)})"
            return None
        return old

    def write(self, record: BenchRecord, note: str) -> None:
        self.summary.paths.append(write_record(self.config.results, record))
        self.summary.written.append(record)
        why = self.redo.pop((record.target, record.precision, record.batch), None)
        self.note(f"{record.target} {record.precision} batch {record.batch}: "
                  + (f"{why}: measured again, {note}" if why else note))

    # ---- the sweep --------------------------------------------------------------------------
    def run(self) -> BenchSummary:
        for variant in self.targets:
            self._bench_target(variant)
        return self.summary

    def _device(self, target: Target, offered: list[str]) -> str:
        if self.config.device is not None:
            return self.config.device
        accelerators = [d for d in target.devices if d != "cpu"]
        for device in accelerators:
            if device in offered:
                return device
        return "cpu" if "cpu" in target.devices else (accelerators[0] if accelerators else "cpu")

    def _wants_bundle(self, variant: TargetVariant, available: bool) -> bool:
        if self.config.emit is None or not variant.target.capabilities.bundles:
            return False
        if self.config.emit_targets is not None:
            return any(variant.matches(n) for n in self.config.emit_targets)
        return not available

    def _bench_target(self, variant: TargetVariant) -> None:
        target = variant.target
        try:
            status = target.available()
        except Exception as exc:  # noqa: BLE001 - a broken probe makes the target unavailable, not the bench
            status = Availability(False, f"its availability check failed: {_one_line(exc)}")
        device = self._device(target, list(status.devices))
        emit = self._wants_bundle(variant, status.ok)
        for precision in self.precisions:
            todo = []
            for batch in self.batches:
                if (old := self.finished(variant, precision, batch, device)) is not None:
                    self.summary.skipped.append(old)
                    self.note(f"{variant.label} {precision.value} batch {batch}: done before, skipped")
                else:
                    if why := self.redo.get((variant.label, precision.value, batch)):
                        self.note(f"{variant.label} {precision.value} batch {batch}: {why}: measuring again")
                    todo.append(batch)
            if not todo:
                continue
            reason = self._unavailable_reason(target, status, precision, device, emit)
            if reason is not None:
                for batch in todo:
                    self.write(self._base(variant, precision, batch, device, "unavailable", reason=reason),
                               "unavailable")
                continue
            spec = TargetSpec(target=target.name, precision=precision, device=device,
                              batch=self._batch_range() if self._dynamic_batch() else None,
                              options=self._options(variant))
            if emit:
                self._emit(variant, spec, precision, device, todo)
            else:
                self._measure(variant, spec, precision, device, todo, dict(status.versions))

    def _options(self, variant: TargetVariant) -> dict[str, Any]:
        # one build for the whole sweep: the target adds its batch layout (one binary per size, say),
        # so that every benched batch is built, not only the range's min and max
        if not self._dynamic_batch():
            return dict(variant.options)
        return variant.target.sweep_options(sorted(self.batches), variant.options)

    def _unavailable_reason(self, target: Target, status: Availability, precision: Precision, device: str,
                            emit: bool) -> str | None:
        if precision not in target.precisions:
            supported = ", ".join(p.value for p in target.precisions)
            return f"target '{target.name}' does not support precision {precision.value} (supports {supported})"
        if device not in target.devices:
            return f"target '{target.name}' has no device '{device}' (devices: {', '.join(target.devices)})"
        if emit:
            return None
        if not status.ok:
            return f"target '{target.name}' cannot run here: {status.reason}"
        if device not in status.devices:
            return f"target '{target.name}' finds no '{device}' device on this machine"
        return None

    def _dynamic_batch(self) -> bool:
        return any(t.shape and not isinstance(t.shape[0], int) for t in self.source.signature.inputs)

    def _batch_range(self) -> tuple[int, int, int]:
        # one artifact serves the whole sweep; TensorRT-style profiles tune for the largest batch
        return (min(self.batches), max(self.batches), max(self.batches))

    def _artifact_dir(self, variant: TargetVariant, spec: TargetSpec) -> Path:
        return (self.config.artifacts / f"{_safe(self.source.name)}-{self.source_hash[:12]}"
                / f"{_safe(variant.label)}-{spec.precision.value}-{_safe(spec.device)}")

    def _emit(self, variant: TargetVariant, spec: TargetSpec, precision: Precision, device: str,
              batches: list[int]) -> None:
        assert self.config.emit is not None
        target = variant.target
        out = self.config.emit / _safe(self.source.name) / f"{_safe(variant.label)}-{precision.value}"
        self.note(f"{variant.label} {precision.value}: writing a deploy bundle")
        try:
            bundle = Path(target.emit_bundle(self.source, spec, out))
        except (TargetUnavailable, InputError) as exc:  # the target cannot take this model or option
            for batch in batches:
                self.write(self._base(variant, precision, batch, device, "unavailable", reason=_one_line(exc)),
                           "unavailable")
            return
        except Exception as exc:  # noqa: BLE001 - one cell's failure never stops the sweep
            for batch in batches:
                self.write(self._base(variant, precision, batch, device, "failed",
                                      reason=f"writing the deploy bundle failed: {_one_line(exc)}"), "bundle failed")
            return
        if bundle.is_dir():  # which cell it stands for, so results imported from it line up with this sweep
            (bundle / BUNDLE_CELL).write_text(json.dumps({
                "model": self.source.name, "target": variant.label, "precision": precision.value,
                "machine": self.machine, "source_hash": self.source_hash, "graph": self.config.graph,
                "batches": batches}, indent=2) + "\n")
        label = f"{spec.preset or target.name} (deploy bundle)"
        for batch in batches:
            self.write(self._base(variant, precision, batch, device, "emitted", bundle=str(bundle),
                                  device_name=label), "bundle written")

    def _measure(self, variant: TargetVariant, spec: TargetSpec, precision: Precision, device: str,
                 batches: list[int], versions: dict[str, str]) -> None:
        target = variant.target
        self.note(f"{variant.label} {precision.value}: compiling")
        try:
            artifact = target.compile(self.source, spec, self._artifact_dir(variant, spec))
        except (TargetUnavailable, InputError) as exc:
            if (isinstance(exc, TargetUnavailable) and self.config.emit_targets is None
                    and self._wants_bundle(variant, available=False)):
                # it runs here but cannot build here (e.g. ais_bench without atc): a bundle instead
                self._emit(variant, spec, precision, device, batches)
                return
            # the target itself says it cannot do this here (missing tool, unsupported combination,
            # an option it does not know)
            for batch in batches:
                self.write(self._base(variant, precision, batch, device, "unavailable", reason=_one_line(exc)),
                           "unavailable")
            return
        except Exception as exc:  # noqa: BLE001
            for batch in batches:
                self.write(self._base(variant, precision, batch, device, "failed",
                                      reason=f"compile failed: {_one_line(exc)}"), "compile failed")
            return
        for batch in batches:
            record = self._measure_cell(variant, artifact, precision, device, batch, versions)
            if record.status == "ok":
                assert record.accuracy is not None and record.median_ms is not None
                self.write(record, f"{record.median_ms:.3f} ms, accuracy "
                                   f"{'pass' if record.accuracy.passed else 'FAIL'}")
            else:
                self.write(record, "failed")

    def _measure_cell(self, variant: TargetVariant, artifact: Artifact, precision: Precision, device: str,
                      batch: int, versions: dict[str, str]) -> BenchRecord:
        target = variant.target
        name = f"{variant.label} {precision.value} batch {batch}"
        manifest = artifact.manifest
        artifact_info = {"path": str(artifact.path), "build_seconds": manifest.build_seconds,
                         "cache": manifest.cache, "spec": manifest.spec.to_json(),
                         "tool_versions": {**versions, **manifest.tool_versions}}
        try:
            feeds = self.feeds(batch)
            self.note(f"{name}: checking accuracy against {self.reference_kind}")
            reference = self.reference(batch)
            session = target.open(artifact)  # one load per cell: the accuracy run and the timing share it
            try:
                outputs = target.run(artifact, feeds, session=session)
                report = compare_outputs(outputs, reference, default_tolerance(precision))
                self.note(f"{name}: profiling")
                result = target.profile(artifact, feeds, self.config.settings, session=session)
            finally:
                session.close()
        except Exception as exc:  # noqa: BLE001
            return self._base(variant, precision, batch, device, "failed", reason=_one_line(exc),
                              artifact=artifact_info)
        return self._base(variant, precision, batch, device, "ok", artifact=artifact_info,
                          accuracy=accuracy_of(report, self.reference_kind), result=result,
                          flops=self.flops(batch))


def run_bench(config: BenchConfig, progress: Progress = lambda text, done, total: None,
              prepare: Callable[..., CompileSource] | None = None) -> BenchSummary:
    """Validate, export once, then sweep; records are written to config.results as cells finish."""
    variants = validate_config(config)
    if prepare is None:
        prepare = frontend_prepare
    kwargs: dict[str, Any] = {} if config.cache_dir is None else {"cache_dir": config.cache_dir}
    if config.graph == "raw":
        kwargs["options"] = FrontendOptions(simplify=False, passes=())  # the plain exporter output
    progress(f"exporting {config.model}", 0, 0)
    source = prepare(config.model, **kwargs)
    bench = Bench(config, source, variants, progress)
    return bench.run()
