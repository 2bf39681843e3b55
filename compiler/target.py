"""The Target plugin interface: public methods validate and time uniformly; backends fill `_impl`s.

A backend subclasses Target, sets its class attributes and implements `_compile` and `_open`;
the session `_open` returns runs and profiles the opened artifact (it holds the state a timing
needs: the engine, the device buffers, the stream). Vendor SDKs are imported inside those
methods only, so `vlc --help` and `vlc targets` work on machines without them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

import vlc
from vlc.artifact import Artifact, BuildDir, building, cache_key, finalize, find_reusable, graph_hash, keep_source_graph
from vlc.errors import InputError, TargetUnavailable
from vlc.inputs import check_batch
from vlc.manifest import Manifest, SourceInfo
from vlc.model import InputSpec, ModelSource, generate_from_specs
from vlc.options import OptionInfo, parse_target_options
from vlc.preflight import CheckReport
from vlc.signature import Signature, onnx_signature
from vlc.spec import Precision, TargetSpec
from vlc.timing import ProfileResult, ProfileSettings

# OptionInfo lives in vlc.options; targets import it from here with the rest of the interface
__all__ = ["DYNAMIC", "GEARS", "PER_BATCH", "Availability", "Capabilities", "CompileSource", "OptionInfo",
           "Session", "Target", "batch_range"]

# How one build covers several batch sizes (Capabilities.batch_layouts)
DYNAMIC = "dynamic"  # one artifact takes a batch range (TensorRT profiles, ONNX Runtime, PyTorch)
PER_BATCH = "per-batch"  # one binary per batch size (ATC static builds, -O batches)
GEARS = "gears"  # one binary with a fixed set of sizes (ATC --dynamic_batch_size, -O gears)


@dataclass
class Availability:
    ok: bool
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)


@dataclass
class CompileSource:
    """What a target compiles: the normalized fp32 ONNX graph and, when known, its torch source."""

    onnx_path: Path
    ref: str
    input_specs: list[InputSpec]
    model: ModelSource | None = None
    frontend: dict[str, Any] = field(default_factory=dict)  # what the front end did (report)
    # inputs the user gave (`vlc compile --input`): the precision check runs on them, and they
    # size the dynamic dims nobody gave a range for
    user_inputs: dict[str, np.ndarray] | None = None

    @property
    def name(self) -> str:
        return self.model.name if self.model is not None else self.onnx_path.stem

    def generate_inputs(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Realistic inputs: the model's own generator when known, else the input specs."""
        if self.model is not None:
            return self.model.generate_inputs(batch, seed)
        return generate_from_specs(self.input_specs, batch, seed)

    @property
    def signature(self) -> Signature:
        return onnx_signature(self.onnx_path)


@dataclass(frozen=True)
class Capabilities:
    """What a target can do beyond compile / open / run / profile, declared on its class so that
    core code asks the declaration instead of probing for methods or naming targets.

    - preflight: `Target.preflight(source, spec, patch=)` returns a vlc.preflight.CheckReport of
      what its compiler would reject (`vlc check`); without it `vlc check` only validates the spec.
    - bundles: `Target.emit_bundle(source, spec, out_dir)` writes a deploy bundle (graph, scripts,
      inputs, references) for a machine with the toolchain, and needs no toolchain here
      (`vlc compile --emit`, `vlc bench --emit`).
    - batch_layouts: how one build covers several batch sizes (DYNAMIC, PER_BATCH, GEARS), the
      first the one `Target.sweep_options` picks for a batch sweep.
    - builds_without_device: artifacts build here for a preset's hardware without that hardware
      (TensorRT-RTX ahead of time); `vlc targets` says "compile only" where nothing runs them.
    - needs_model: it builds from the PyTorch model itself, not the ONNX graph (and its sessions
      re-create the model from its ref), so the model's code must be importable where it runs.
    - compiled_files: (suffix, what it is) of the bare compiled files it writes (".engine", "TensorRT
      engine"); handed such a file instead of its artifact, `vlc run` says which target builds one.
    """

    preflight: bool = False
    bundles: bool = False
    batch_layouts: tuple[str, ...] = (DYNAMIC,)
    builds_without_device: bool = False
    needs_model: bool = False
    compiled_files: tuple[tuple[str, str], ...] = ()


class Session(Protocol):
    """An opened artifact: call `run` and `profile` many times, then `close`.

    `profile` times calls at one batch size with vlc.timing's one method (the host clock,
    synchronised after each call on a device) and says so in `extra["timing"]`."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def profile(self, feeds: Mapping[str, np.ndarray], settings: ProfileSettings,
                batch: int) -> ProfileResult: ...

    def close(self) -> None: ...


class Target:
    name: ClassVar[str]
    summary: ClassVar[str] = ""
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP32,)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    options: ClassVar[dict[str, OptionInfo]] = {}
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    default_preset: ClassVar[str | None] = None
    capabilities: ClassVar[Capabilities] = Capabilities()

    # ---- what a backend implements -------------------------------------------------------
    def available(self) -> Availability:
        raise NotImplementedError

    def _compile(self, source: CompileSource, spec: TargetSpec, build: BuildDir) -> None:
        """Write the compiled file(s) into build.path and record them in build.files."""
        raise NotImplementedError

    def _open(self, artifact: Artifact) -> Session:
        raise NotImplementedError

    # ---- the uniform public interface ----------------------------------------------------
    def require_available(self) -> Availability:
        status = self.available()
        if not status.ok:
            raise TargetUnavailable(f"target '{self.name}' cannot run here: {status.reason}",
                                    fix="run `vlc targets` to see what this machine supports")
        return status

    def parse_options(self, given: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
        """Every declared option's typed value (vlc.options); one-line errors for unknown names and
        bad values. strict=False (a stored spec) drops names this target no longer declares."""
        return parse_target_options(self.name, self.options, given, strict=strict)

    def artifact_spec(self, artifact: Artifact) -> TargetSpec:
        """The spec an artifact was built with, its options typed and complete (an artifact written
        before an option existed gets its default)."""
        spec = artifact.spec
        return replace(spec, options=self.parse_options(spec.options, strict=False))

    def validate_spec(self, spec: TargetSpec, signature: Signature) -> TargetSpec:
        """A new spec, checked against this target: its options typed and complete, the default
        preset filled in; the spec passed in is left as it was."""
        if spec.precision not in self.precisions:
            raise InputError(f"target '{self.name}' does not support precision {spec.precision.value}",
                             fix=f"use one of: {', '.join(p.value for p in self.precisions)}")
        if spec.device not in self.devices:
            raise InputError(f"target '{self.name}' has no device '{spec.device}'",
                             fix=f"use one of: {', '.join(self.devices)}")
        options = self.parse_options(spec.options)
        preset = spec.preset if spec.preset is not None else self.default_preset
        if preset is not None and preset not in self.presets:
            known = ", ".join(sorted(self.presets)) or "none"
            raise InputError(f"unknown preset '{preset}' for target '{self.name}'",
                             fix=f"presets of this target: {known}")
        for name, shape_range in spec.shapes.items():
            sig = signature.input(name)  # raises for unknown names: never a silent fallback
            if len(sig.shape) != len(shape_range.min):
                raise InputError(f"--shapes {name} has rank {len(shape_range.min)}, the input has "
                                 f"{list(sig.shape)}", fix="give shapes of the input's rank")
            for axis, dim in enumerate(sig.shape):
                if isinstance(dim, int) and not shape_range.min[axis] == shape_range.max[axis] == dim:
                    raise InputError(f"--shapes {name} changes fixed axis {axis} (size {dim})",
                                     fix=f"keep axis {axis} at {dim}")
        return replace(spec, preset=preset, shapes=dict(spec.shapes), options=options)

    def compile(self, source: CompileSource, spec: TargetSpec, out_dir: str | Path, *,
                force: bool = False) -> Artifact:
        signature = source.signature
        spec = self.validate_spec(spec, signature)
        status = self.require_available()
        key = cache_key(graph_hash(source.onnx_path), spec)
        reused, note = (None, None) if force else find_reusable(Path(out_dir), key)
        if reused is not None:
            return reused
        with building(Path(out_dir)) as build:
            build.tool_versions.update(status.versions)
            start = time.perf_counter()
            self._compile(source, spec, build)
            seconds = time.perf_counter() - start
            source_graph = keep_source_graph(build, source.onnx_path, key["source_hash"])
            artifact = finalize(build, Path(out_dir), Manifest(
                target=self.name, preset=spec.preset, precision=spec.precision.value, spec=spec,
                signature=signature, batch_range=self._batch_range(spec, signature, build),
                source=SourceInfo(ref=source.ref, onnx=source_graph, hash=key["source_hash"],
                                  weights=(source.frontend.get("options") or {}).get("weights"),
                                  input_specs=tuple(source.input_specs)),
                files={}, cache=key, vlc_version=vlc.__version__, build_seconds=round(seconds, 3)))
            artifact.note = note  # why the artifact that was there is not reused
            return artifact

    # ---- declared capabilities (see Capabilities); a target that declares one implements it ----
    def preflight(self, source: CompileSource, spec: TargetSpec, *, patch: bool = True) -> CheckReport:
        """What this target's compiler would reject in the source graph (and, with `patch`, what is
        left after vlc's patches); only where `capabilities.preflight`."""
        raise InputError(f"target '{self.name}' has no pre-flight check",
                         fix="`vlc compile` reports what its compiler rejects")

    def emit_bundle(self, source: CompileSource, spec: TargetSpec, out_dir: str | Path) -> Path:
        """Write a deploy bundle into out_dir and return it; only where `capabilities.bundles`."""
        raise InputError(f"target '{self.name}' cannot write deploy bundles",
                         fix="drop --emit; `vlc targets --json` lists the targets that can (bundles)")

    def sweep_options(self, batches: list[int], options: Mapping[str, Any]) -> dict[str, Any]:
        """The options of one build that serves every batch size of a sweep (vlc bench); a
        DYNAMIC target needs none beyond the batch range, others add their layout's option
        unless the user chose one."""
        return dict(options)

    def _batch_range(self, spec: TargetSpec, signature: Signature, build: BuildDir) -> list[int] | None:
        """The manifest's batch_range; a target whose build sized dynamic dims itself overrides it."""
        return batch_range(spec, signature)

    def check_artifact(self, artifact: Artifact) -> None:
        if artifact.target != self.name:
            raise InputError(f"artifact {artifact.path} was built for target '{artifact.target}', "
                             f"not '{self.name}'", fix=f"use --target {artifact.target}")

    def validate_feeds(self, artifact: Artifact, feeds: Mapping[str, np.ndarray]) -> int:
        batch = artifact.signature.validate_inputs(feeds)
        check_batch(artifact, batch)
        return batch

    def open(self, artifact: Artifact) -> Session:
        self.check_artifact(artifact)
        self.require_available()
        return self._open(artifact)

    def run(self, artifact: Artifact, feeds: Mapping[str, np.ndarray], *,
            session: Session | None = None) -> dict[str, np.ndarray]:
        """Outputs of one call; in `session` when given (left open), else in a session of its own."""
        self.validate_feeds(artifact, feeds)
        if session is not None:
            return session.run(feeds)
        opened = self.open(artifact)
        try:
            return opened.run(feeds)
        finally:
            opened.close()

    def profile(self, artifact: Artifact, feeds: Mapping[str, np.ndarray], settings: ProfileSettings, *,
                session: Session | None = None) -> ProfileResult:
        """Timings at the feeds' batch size; in `session` when given (left open: a sweep loads
        the artifact once), else in a session of its own."""
        batch = self.validate_feeds(artifact, feeds)
        if session is not None:
            return session.profile(feeds, settings, batch)
        opened = self.open(artifact)
        try:
            return opened.profile(feeds, settings, batch)
        finally:
            opened.close()


def batch_range(spec: TargetSpec, signature: Signature) -> list[int] | None:
    """The batch sizes an artifact accepts: from --batch or --shapes; None when unconstrained."""
    if spec.batch:
        return [spec.batch[0], spec.batch[2]]
    dynamic_inputs = [t for t in signature.inputs if t.shape and not isinstance(t.shape[0], int)]
    ranges = [spec.shapes[t.name] for t in dynamic_inputs if t.name in spec.shapes]
    if ranges:
        return [max(r.min[0] for r in ranges), min(r.max[0] for r in ranges)]
    if signature.inputs and all(t.shape and isinstance(t.shape[0], int) for t in signature.inputs):
        fixed = int(signature.inputs[0].shape[0])  # an int: checked just above
        return [fixed, fixed]
    return None
