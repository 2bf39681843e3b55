"""`vlc bench`: one model, many targets x precisions x batch sizes, one record per cell.

The model is exported once (vlc.frontend.pipeline.prepare); each target x precision is
compiled once; every batch size is checked against the reference model (the PyTorch model
when there is one, else the fp32 ONNX graph in ONNX Runtime) and then profiled. Each cell's
record is written as soon as it is done, so an interrupted sweep resumes where it stopped:
a cell whose record already says "ok" for the same model, target, precision, batch, machine
and source-graph hash is skipped. Cells this machine cannot run are recorded as
"unavailable" with the reason; targets asked for with --emit write deploy bundles instead
(through a Target's `emit_bundle(source, spec, out_dir)` when it has one): by default those
unavailable here, and those that can run but not build here.

A --targets entry may carry target options (`torch:mode=compile`, vlc.bench.variants); the
records name the target by that label, so variants are separate cells and report columns.
With `graph="raw"` the sweep measures the plain exporter output (no simplifier, no passes)
and every label gets the suffix "@raw".
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vlc import environment as environ
from vlc.accuracy import AccuracyReport, compare_outputs, default_tolerance
from vlc.artifact import Artifact, graph_hash
from vlc.bench.variants import TargetVariant, resolve
from vlc.errors import InputError, TargetUnavailable, first_line
from vlc.flops import FlopCount, count_flops, device_peak, utilisation
from vlc.records import Accuracy, BenchRecord, RecordError, read_record, record_path, write_record
from vlc.spec import Precision, TargetSpec
from vlc.target import Availability, CompileSource, Target
from vlc.timing import ProfileResult, ProfileSettings

EMIT_METHOD = "emit_bundle"
BUNDLE_CELL = "vlc-bench.json"  # written into each bundle: the bench cell it stands for (label, machine)
# Targets that build one binary per static batch size declare an option of this name; the sweep
# passes its batch sizes there, so every benched batch is built (not only min and max).
STATIC_BATCHES_OPTION = "batches"


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
            if any(v.matches(n) for n in config.emit_targets) and not callable(getattr(v.target, EMIT_METHOD, None)):
                raise InputError(f"target '{v.target.name}' cannot write deploy bundles",
                                 fix=f"targets with a {EMIT_METHOD}() method can; bench it here instead")
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
        self.total = len(targets) * len(self.precisions) * len(self.batches)

    def note(self, text: str) -> None:
        """Progress within a cell."""
        self.progress(text, len(self.summary.written) + len(self.summary.skipped), self.total)

    # ---- inputs, references, FLOPs (each once per batch) ------------------------------------
    @property
    def reference_kind(self) -> str:
        return "torch" if self.source.model is not None else "onnxruntime-fp32"

    def feeds(self, batch: int) -> dict[str, np.ndarray]:
        if batch not in self._feeds:
            self._feeds[batch] = self.source.generate_inputs(batch, seed=self.config.seed)
        return self._feeds[batch]

    def reference(self, batch: int) -> dict[str, np.ndarray]:
        if batch not in self._reference:
            if self.source.model is not None:
                from vlc.frontend.pipeline import torch_outputs

                # on the GPU when the sweep uses one: large batches take minutes on a CPU
                self._reference[batch] = torch_outputs(self.source.model, self.feeds(batch),
                                                       device=self._reference_device())
            else:
                from vlc.targets.onnxruntime.session import run_onnx_cpu

                self._reference[batch] = run_onnx_cpu(self.source.onnx_path, self.feeds(batch))
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
        settings = {**asdict(self.config.settings), "seed": self.config.seed, "graph": self.config.graph}
        if variant.options:
            settings["target_options"] = dict(variant.options)
        return BenchRecord(model=self.source.name, target=variant.label, precision=precision.value, batch=batch,
                           machine=self.machine, status=status, source_hash=self.source_hash,
                           model_ref=self.source.ref, device=device,
                           device_name=fields.pop("device_name", None) or environ.device_name(self.env, device),
                           settings=settings, environment=self.env, **fields)

    def finished(self, variant: TargetVariant, precision: Precision, batch: int) -> BenchRecord | None:
        """The cell's earlier record when it is done for this source graph (resume)."""
        if self.config.force:
            return None
        probe = BenchRecord(self.source.name, variant.label, precision.value, batch, self.machine, "ok",
                            self.source_hash)
        path = record_path(self.config.results, probe)
        if not path.is_file():
            return None
        try:
            old = read_record(path)
        except RecordError:
            return None  # unreadable: measure again and replace it
        if old.source_hash != self.source_hash:
            return None
        if old.status == "ok" or (old.status == "emitted" and old.bundle and Path(old.bundle).exists()):
            return old
        return None

    def write(self, record: BenchRecord, note: str) -> None:
        self.summary.paths.append(write_record(self.config.results, record))
        self.summary.written.append(record)
        self.note(f"{record.target} {record.precision} batch {record.batch}: {note}")

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
        if self.config.emit is None or not callable(getattr(variant.target, EMIT_METHOD, None)):
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
                if (old := self.finished(variant, precision, batch)) is not None:
                    self.summary.skipped.append(old)
                    self.note(f"{variant.label} {precision.value} batch {batch}: done before, skipped")
                else:
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
        options = dict(variant.options)
        # unless the entry chose its own layout (its batches, or gears: one binary for several sizes)
        if (STATIC_BATCHES_OPTION in variant.target.options and self._dynamic_batch()
                and not set(options) & {STATIC_BATCHES_OPTION, "gears"}):
            options[STATIC_BATCHES_OPTION] = sorted(self.batches)
        return options

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
            bundle = Path(getattr(target, EMIT_METHOD)(self.source, spec, out) or out)
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
        artifact_info = {"path": str(artifact.path), "build_seconds": artifact.manifest.get("build_seconds"),
                         "cache": artifact.manifest.get("cache"), "spec": artifact.manifest.get("spec"),
                         "tool_versions": {**versions, **(artifact.manifest.get("tool_versions") or {})}}
        try:
            feeds = self.feeds(batch)
            self.note(f"{name}: checking accuracy against {self.reference_kind}")
            reference = self.reference(batch)
            report = compare_outputs(target.run(artifact, feeds), reference, default_tolerance(precision))
            self.note(f"{name}: profiling")
            result = target.profile(artifact, feeds, self.config.settings)
        except Exception as exc:  # noqa: BLE001
            return self._base(variant, precision, batch, device, "failed", reason=_one_line(exc),
                              artifact=artifact_info)
        record = self._base(variant, precision, batch, device, "ok", artifact=artifact_info,
                            accuracy=accuracy_of(report, self.reference_kind))
        fill_timing(record, result, self.flops(batch), self.env)
        return record


def flop_count(onnx_path: str | Path | None, batch: int) -> FlopCount | None:
    """FLOPs of one call at `batch`, or None when the graph is missing or cannot be counted."""
    if onnx_path is None or not Path(onnx_path).is_file():
        return None
    try:
        return count_flops(onnx_path, batch)
    except Exception:  # noqa: BLE001 - FLOPs are a nicety; the record says "unknown"
        return None


def fill_timing(record: BenchRecord, result: ProfileResult, count: FlopCount | None,
                env: dict[str, Any]) -> None:
    """Latency, throughput, FLOPs per sample, achieved TFLOP/s and share of the device's peak."""
    data = result.to_json()
    record.latency_ms = data["latency_ms"]
    record.throughput_per_s = data["throughput_per_s"]
    record.includes_transfers = result.includes_transfers
    record.warnings = list(result.warnings)
    if result.breakdown:
        record.settings["breakdown_ms"] = data["breakdown_ms"]
    if count is None:
        record.warnings.append("FLOPs could not be counted from the ONNX graph")
        return
    if count.unresolved:
        record.warnings.append(f"FLOPs: {len(count.unresolved)} matrix op(s) with unknown shapes not "
                               f"counted ({', '.join(count.unresolved[:3])})")
    record.flops_per_sample = count.per_sample
    peak = device_peak(record.device_name, record.precision, env, record.device)
    record.achieved_tflops, record.utilisation = utilisation(count.per_sample, record.throughput_per_s, peak)
    record.peak_tflops = peak.tflops
    record.peak_source = peak.source


def accuracy_of(report: AccuracyReport, reference: str) -> Accuracy:
    outputs = [o.to_json() for o in report.outputs]
    finite = [o for o in report.outputs if o.max_abs == o.max_abs]  # NaN when not comparable
    return Accuracy(
        passed=report.passed, reference=reference,
        max_abs=max((o.max_abs for o in finite), default=None),
        median_rel=max((o.median_rel for o in finite), default=None),
        cosine=min((o.cosine for o in finite), default=None),
        tolerance=report.tolerance.to_json(), outputs=outputs)


def run_bench(config: BenchConfig, progress: Progress = lambda text, done, total: None,
              prepare: Callable[..., CompileSource] | None = None) -> BenchSummary:
    """Validate, export once, then sweep; records are written to config.results as cells finish."""
    variants = validate_config(config)
    if prepare is None:
        from vlc.frontend.pipeline import prepare
    kwargs: dict[str, Any] = {} if config.cache_dir is None else {"cache_dir": config.cache_dir}
    if config.graph == "raw":
        from vlc.frontend.pipeline import FrontendOptions

        kwargs["options"] = FrontendOptions(simplify=False, passes=())  # the plain exporter output
    progress(f"exporting {config.model}", 0, 0)
    source = prepare(config.model, **kwargs)
    bench = Bench(config, source, variants, progress)
    return bench.run()
