"""vlc as a library: compile, run, profile, compare and bench from Python (notebooks, benchmarks).

    from vlc import api
    artifact = api.compile("examples/clip.py:image_encoder", "onnxruntime", precision="fp16")
    outputs = api.run(artifact)                        # generated inputs at the compiled opt batch
    records = api.profile(artifact, batches=[1, 8])    # one BenchRecord per batch
    report = api.compare(artifact).report              # against the PyTorch model (or the ONNX graph)

The `vlc` commands are these functions with argument parsing in front and printing behind. Every
check on what the caller asked for runs before the slow work (the front end, a build); failures
are vlc.errors exceptions with one line each. torch, onnx and the ONNX Runtime stack are imported
by the functions that need them, so importing this module costs no more than `vlc --help`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlc import plugin_manager
from vlc.accuracy import compare_outputs, default_tolerance, tolerance_with
from vlc.artifact import Artifact
from vlc.environment import collect
from vlc.errors import AccuracyError, InputError, TargetUnavailable
from vlc.inputs import check_batch, default_batch, load_arrays, load_inputs
from vlc.measure import REFERENCE_ONNX, REFERENCE_TORCH, flop_count, make_record, profile_settings, reference_outputs
from vlc.model import ModelSource
from vlc.outdir import claim_output_dir
from vlc.plugin_manager import get_target
from vlc.shape_choice import from_user_inputs
from vlc.signature import Signature
from vlc.spec import (
    Precision,
    ShapeRange,
    TargetSpec,
    parse_batch_range,
    parse_options,
    parse_shape_ranges,
)
from vlc.target import CompileSource, Target
from vlc.timing import ProfileSettings

if TYPE_CHECKING:  # numpy and the heavy layers are imported by the functions that use them
    import numpy as np

    from vlc.accuracy import AccuracyReport
    from vlc.bench.runner import BenchSummary
    from vlc.frontend.pipeline import FrontendOptions
    from vlc.records import BenchRecord
    from vlc.timing import ProfileResult

__all__ = ["Build", "Comparison", "Profile", "absolute_ref", "bench", "build", "compare", "compile", "load",
           "make_spec", "model_name", "prepare", "profile", "run"]

# A step the caller may show (the CLI draws a spinner): step(description) -> context manager
Step = Callable[[str], AbstractContextManager[Any]]


def _no_step(_: str) -> AbstractContextManager[Any]:
    return nullcontext()


# ---- naming --------------------------------------------------------------------------------------
def absolute_ref(ref: str) -> str:
    """`file.py:factory` with the file made absolute, so artifacts run from any directory."""
    target, sep, attr = ref.rpartition(":")
    if sep and target.endswith(".py") and Path(target).is_file():
        return f"{Path(target).resolve()}:{attr}"
    return ref


def model_name(source: CompileSource) -> str:
    """A readable name for the default artifact directory."""
    if source.model is not None:
        return source.model.name
    path = Path(source.ref)
    if path.stem == "model" and path.parent.name:  # e.g. onnx test data: <case>/model.onnx
        return path.parent.name
    return path.stem


def _target(target: str | Target) -> Target:
    return get_target(target) if isinstance(target, str) else target


# ---- compile -------------------------------------------------------------------------------------
def make_spec(target: str | Target, precision: str | Precision = "fp32", *, preset: str | None = None,
              device: str | None = None, shapes: Mapping[str, ShapeRange] | Sequence[str] = (),
              batch: int | str | tuple[int, int, int] | None = None,
              options: Mapping[str, Any] | Sequence[str] = ()) -> TargetSpec:
    """The TargetSpec of a build: typed values, or the CLI's text (`-O k=v`, `--shapes`, `--batch`).
    The device defaults to the target's first (cuda for trt)."""
    tgt = _target(target)
    if isinstance(batch, int):
        batch = (batch, batch, batch)
    elif isinstance(batch, str):
        batch = parse_batch_range(batch)
    return TargetSpec(target=tgt.name, precision=precision if isinstance(precision, Precision) else
                      Precision.parse(precision), preset=preset, device=device or tgt.devices[0],
                      shapes=dict(shapes) if isinstance(shapes, Mapping) else parse_shape_ranges(list(shapes)),
                      batch=batch, options=dict(options) if isinstance(options, Mapping) else
                      parse_options(list(options)))


def prepare(model: str, *, cache_dir: Path | None = None, frontend: FrontendOptions | None = None) -> CompileSource:
    """The front end: the model (example name, file.py:factory, module:factory or .onnx file)
    exported and normalized once; later calls with the same model and options reuse the cache."""
    from vlc.frontend.pipeline import FrontendOptions  # local: startup
    from vlc.frontend.pipeline import prepare as frontend_prepare  # local: startup

    source = frontend_prepare(absolute_ref(model), cache_dir=cache_dir, options=frontend or FrontendOptions())
    source.onnx_path = Path(source.onnx_path).resolve()
    return source


@dataclass
class Build:
    """What `build` did: the artifact (or deploy bundle), whether an existing one was reused, the
    front end's time, and notes worth telling the user (why a cache or an artifact was not reused)."""

    artifact: Artifact
    source: CompileSource
    reused: bool
    bundle: bool
    frontend_seconds: float
    notes: list[str] = field(default_factory=list)


def _manifest_stamp(out_dir: Path) -> tuple[int, int] | None:
    try:
        stat = (out_dir / "manifest.json").stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def build(model: str | CompileSource, target: str | Target, *, precision: str | Precision = "fp32",
          preset: str | None = None, device: str | None = None,
          shapes: Mapping[str, ShapeRange] | Sequence[str] = (),
          batch: int | str | tuple[int, int, int] | None = None,
          options: Mapping[str, Any] | Sequence[str] = (), output: str | Path | None = None,
          emit: str | Path | None = None, force: bool = False, frontend: FrontendOptions | None = None,
          cache_dir: Path | None = None, input_files: Sequence[str] = (), step: Step = _no_step) -> Build:
    """Compile `model` for `target` into `output` (default artifacts/<model>-<target>-<precision>),
    reusing an artifact built from the same graph and spec; with `emit`, write the target's deploy
    bundle there instead (Capabilities.bundles; no toolchain needed here). `input_files` (.npy,
    .npz, .pb, Polygraphy JSON) are the precision check's inputs and size dynamic dims nobody gave
    a range for. Everything given is checked before the front end runs."""
    tgt = _target(target)
    spec = make_spec(tgt, precision, preset=preset, device=device, shapes=shapes, batch=batch, options=options)
    bundle = emit is not None
    if emit is not None:
        if not tgt.capabilities.bundles:
            raise InputError(f"target '{tgt.name}' cannot write deploy bundles",
                             fix="drop --emit; `vlc targets --json` lists the targets that can (bundles)")
        if output is not None:
            raise InputError("--emit and -o both say where to write", fix="give one of them")
        claim_output_dir(Path(emit), "bundle", option="--emit")  # before the (slow) front end
    elif output is not None:
        claim_output_dir(Path(output), "artifact")
    tgt.validate_spec(TargetSpec.from_json({**spec.to_json(), "shapes": {}}), Signature((), ()))
    if not bundle:  # a bundle needs no toolchain here
        status = tgt.require_available()
        if status.devices and spec.device not in status.devices:
            raise TargetUnavailable(f"target '{tgt.name}' has no {spec.device} device here",
                                    fix=f"devices here: {', '.join(status.devices)} (see `vlc targets`)")
    if spec.batch and spec.shapes:
        raise InputError("--batch and --shapes both set the batch range",
                         fix="give the batch inside --shapes, or use --batch alone")

    start = time.perf_counter()
    if isinstance(model, CompileSource):
        source = model
    else:
        with step(f"front end: {model}"):
            source = prepare(model, cache_dir=cache_dir, frontend=frontend)
    frontend_seconds = time.perf_counter() - start
    notes = [note for note in [source.frontend.get("cache_note")] if note]
    if input_files:
        source.user_inputs = load_inputs(list(input_files), source.signature)
        spec, source.input_specs, note = from_user_inputs(source.signature, spec, source.user_inputs,
                                                          source.input_specs)
        if note:
            notes.append(note)
        force = True  # an artifact checked on other inputs must not stand for this check
    out_dir = Path(emit) if emit is not None else Path(output) if output is not None else \
        Path("artifacts") / f"{model_name(source)}-{tgt.name}-{spec.precision.value}"
    if not bundle:
        claim_output_dir(out_dir, "artifact")  # the default directory, too, may hold someone's files
    before = _manifest_stamp(out_dir)
    if bundle:
        with step(f"writing a {tgt.name} deploy bundle of {model_name(source)}"):
            artifact = Artifact.load(tgt.emit_bundle(source, spec, out_dir))
    else:
        with step(f"compiling {model_name(source)} for {tgt.name} ({spec.precision.value})"):
            artifact = tgt.compile(source, spec, out_dir, force=force)
    if artifact.note:
        notes.append(artifact.note)  # why the artifact that was there is not reused
    reused = before is not None and before == _manifest_stamp(out_dir)
    return Build(artifact, source, reused, bundle, round(frontend_seconds, 3), notes)


def compile(model: str | CompileSource, target: str | Target, **kwargs: Any) -> Artifact:
    """`build(...)`'s artifact: compile `model` for `target` (keywords as `build` takes them)."""
    return build(model, target, **kwargs).artifact


# ---- load, run -----------------------------------------------------------------------------------
def _compiled_file(suffix: str) -> tuple[str, list[str]] | None:
    """(what it is, the targets that write it) for a bare compiled file (Capabilities.compiled_files)."""
    kinds = {name: dict(t.capabilities.compiled_files).get(suffix) for name, t in plugin_manager.targets().items()}
    found = {name: kind for name, kind in kinds.items() if kind}
    return (next(iter(found.values())), sorted(found)) if found else None


def load(path: str | Path | Artifact, *, step: Step = _no_step) -> tuple[Artifact, Target]:
    """The artifact at `path` and the target that built it (registered here). A bare .onnx file
    runs as an onnxruntime fp32 CPU artifact of the file as it is, built in a temporary directory
    removed at exit (`artifact.transient_of` names the file)."""
    if isinstance(path, Artifact):
        return path, get_target(path.target)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx" and path.is_file():
        return _onnx_file_artifact(path, step)
    if path.is_file() and (compiled := _compiled_file(suffix)) is not None:
        # a compiled file runs only from the artifact `vlc compile` writes around it
        kind, targets = compiled
        raise InputError(f"{path} is a bare {kind}; vlc runs the artifact directory `vlc compile` writes "
                         "(its manifest holds the inputs, batch range and build settings)",
                         fix=f"build one from the ONNX model: vlc compile MODEL.onnx -t TARGET -o DIR, then "
                             f"pass DIR (TARGET: {' or '.join(targets)})")
    artifact = Artifact.load(path)
    return artifact, get_target(artifact.target)


def _onnx_file_artifact(path: Path, step: Step) -> tuple[Artifact, Target]:
    import atexit
    import shutil
    import tempfile

    target = get_target("onnxruntime")
    target.require_available()
    scratch = Path(tempfile.mkdtemp(prefix="vlc-onnx-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    from vlc.frontend.pipeline import FrontendOptions  # local: startup

    with step(f"building an onnxruntime artifact of {path.name}"):
        source = prepare(str(path.resolve()), cache_dir=scratch / "cache",
                         frontend=FrontendOptions(simplify=False, passes=(), parity=False))
        artifact = target.compile(source, make_spec(target, "fp32", device="cpu"), scratch / "artifact")
    artifact.transient_of = path  # records name the file, not a directory removed at exit
    return artifact, target


def inputs(artifact: Artifact, *, files: Sequence[str] = (), batch: int | None = None,
           seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for `artifact`: read from `files`, else generated at `batch` (default: the compiled
    opt batch) by the model's own generator or the input specs kept in the manifest."""
    if files and batch is not None:
        raise InputError("--batch applies to generated inputs, not to --input files",
                         fix="drop --batch; the files' first axis is the batch")
    from vlc.frontend.feeds import artifact_inputs  # local: startup

    return artifact_inputs(artifact, files=list(files), batch=batch, seed=seed)


def run(artifact: str | Path | Artifact, feeds: Mapping[str, np.ndarray] | None = None, *,
        files: Sequence[str] = (), batch: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The artifact's outputs on `feeds` (else on `inputs(...)`), in a session of its own."""
    loaded, target = load(artifact)
    return target.run(loaded, feeds if feeds is not None else inputs(loaded, files=files, batch=batch, seed=seed))


# ---- profile -------------------------------------------------------------------------------------
@dataclass
class Profile:
    """One timing per batch, as vlc.timing measured it, and the record `vlc report` reads of each."""

    artifact: Artifact
    results: list[ProfileResult]
    records: list[BenchRecord]
    environment: dict[str, Any]


def environment(artifact: Artifact, target: Target) -> dict[str, Any]:
    """Where a measurement ran (vlc.environment.collect) plus the target's own SDK versions."""
    return {**collect(), "target_versions": dict(target.available().versions),
            "artifact_tool_versions": dict(artifact.manifest.tool_versions)}


def artifact_flops(artifact: Artifact, batch: int) -> Any:
    """FLOPs of the artifact's source graph at `batch` (None when that graph is not on this machine)."""
    recorded = artifact.manifest.source.onnx  # relative to the artifact
    return flop_count(Path(artifact.path) / recorded if recorded else None, batch)


def artifact_model_name(artifact: Artifact) -> str:
    """The model's name from the artifact's ref: the factory, the example, or the ONNX file."""
    ref = artifact.manifest.source.ref or artifact.path.name
    if not ref.lower().endswith(".onnx"):
        return ref.rpartition(":")[2]
    path = Path(ref)
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


def artifact_record(artifact: Artifact, result: ProfileResult, settings: ProfileSettings, env: dict[str, Any],
                    machine: str) -> BenchRecord:
    """The record of one profiled batch (vlc.measure.make_record), with FLOPs and share of peak."""
    manifest = artifact.manifest
    return make_record(
        model=artifact_model_name(artifact), target=artifact.target, precision=manifest.precision,
        batch=result.batch, machine=machine, status="ok",
        source_hash=manifest.cache.get("source_hash", "") or "unknown",
        model_ref=manifest.source.ref, device=artifact.spec.device, env=env,
        settings=profile_settings(settings, command="vlc profile", extra=result.to_json()["extra"]),
        artifact={"path": str(artifact.transient_of or artifact.path), "preset": manifest.preset,
                  "spec": manifest.spec.to_json(), "tool_versions": manifest.tool_versions,
                  "cache": manifest.cache},
        result=result, flops=artifact_flops(artifact, result.batch))


def profile(artifact: str | Path | Artifact, *, batches: Sequence[int] | None = None,
            settings: ProfileSettings | None = None, seed: int = 0, machine: str | None = None,
            on_batch: Callable[[int, Mapping[str, np.ndarray]], None] | None = None) -> Profile:
    """Latency and throughput per batch size (default: the compiled opt batch), the artifact opened
    once for the sweep; every batch is checked against the compiled range before any is timed.
    `on_batch(batch, feeds)` sees each batch's inputs before it is timed (`vlc profile --save-inputs`)."""
    loaded, target = load(artifact)
    settings = settings or ProfileSettings()
    sweep = list(dict.fromkeys(batches)) if batches else [default_batch(loaded)]
    for b in sweep:
        check_batch(loaded, b)
    env = environment(loaded, target)
    results, records = [], []
    session = target.open(loaded)
    try:
        for b in sweep:
            feeds = inputs(loaded, batch=b, seed=seed)
            if on_batch is not None:
                on_batch(b, feeds)
            result = target.profile(loaded, feeds, settings, session=session)
            results.append(result)
            records.append(artifact_record(loaded, result, settings, env, machine or env["host"]))
    finally:
        session.close()
    return Profile(loaded, results, records, env)


# ---- compare -------------------------------------------------------------------------------------
@dataclass
class Comparison:
    artifact: Artifact
    reference: str  # what the outputs were compared with: torch, onnx, an artifact, expected outputs
    feeds: dict[str, np.ndarray]
    tolerance: Any  # vlc.accuracy.Tolerance
    report: AccuracyReport

    @property
    def passed(self) -> bool:
        return bool(self.report.passed)

    def to_json(self) -> dict[str, Any]:
        return {"artifact": str(self.artifact.path), "target": self.artifact.target,
                "precision": self.artifact.manifest.precision, "reference": self.reference,
                "inputs": {k: list(v.shape) for k, v in self.feeds.items()}, **self.report.to_json()}

    def raise_for_failure(self) -> None:
        """AccuracyError (exit 4 on the CLI) naming the outputs that differ, when any does."""
        if self.passed:
            return
        failing = [o for o in self.report.outputs if not o.passed]
        detail = "; ".join(f"{o.name}: {o.reason}" for o in failing[:3])
        raise AccuracyError(f"{len(failing)} of {len(self.report.outputs)} output(s) differ from {self.reference}: "
                            f"{detail}", where=str(self.artifact.path),
                            fix="loosen --atol/--rtol/--min-cosine only if this precision explains it")


def is_torch_ref(ref: str | None) -> bool:
    return bool(ref) and not str(ref).lower().endswith(".onnx")


def torch_reference(ref: str, feeds: Mapping[str, np.ndarray], weights: str | None = None
                    ) -> dict[str, np.ndarray]:
    """The original PyTorch model (with the weights it was compiled with), true fp32 on the CPU."""
    from vlc.frontend.loader import load_model  # local: startup

    source = load_model(ref, weights=weights)
    if not isinstance(source, ModelSource):
        raise InputError(f"--reference torch needs a PyTorch model; the artifact was built from {ref}",
                         fix="use --reference onnx")
    return reference_outputs(REFERENCE_TORCH, source, feeds)


def onnx_reference(artifact: Artifact, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The normalized source graph in ONNX Runtime on the CPU, fp32."""
    recorded = artifact.manifest.source.onnx
    onnx_path = Path(artifact.path) / (recorded or "source.onnx")
    if not onnx_path.is_file():
        raise InputError(f"the artifact's source graph {onnx_path} no longer exists", where=str(artifact.path),
                         fix="recompile with `vlc compile ... --force`, or use --reference torch")
    return reference_outputs(REFERENCE_ONNX, onnx_path, feeds)


def compare(artifact: str | Path | Artifact, reference: str | Path | Artifact | None = None, *,
            expected: Sequence[str] = (), files: Sequence[str] = (), batch: int | None = None, seed: int = 0,
            atol: float | None = None, rtol: float | None = None, min_cosine: float | None = None,
            step: Step = _no_step) -> Comparison:
    """The artifact's outputs against `reference` on the same inputs: "torch" (the PyTorch model,
    CPU fp32), "onnx" (the source graph in ONNX Runtime, CPU fp32), another artifact, or `expected`
    output files; default torch for PyTorch models, else onnx. Tolerances default to the precision's."""
    loaded, target = load(artifact)
    if expected and reference is not None:
        raise InputError("--expected and --reference are exclusive", fix="give one of them")
    other = None
    if expected:
        label = "expected outputs"
    elif reference is None:
        label = "torch" if is_torch_ref(loaded.manifest.source.ref) else "onnx"
    elif isinstance(reference, str) and reference in ("torch", "onnx"):
        label = reference
    else:
        other = load(reference)
        label = f"artifact {other[0].path}"
    tolerance = tolerance_with(default_tolerance(loaded.manifest.precision), atol=atol, rtol=rtol,
                               min_cosine=min_cosine)
    feeds = inputs(loaded, files=files, batch=batch, seed=seed)
    wanted = load_arrays(list(expected), loaded.signature.output_names, what="output") if expected else {}
    with step(f"running {loaded.path.name}"):
        actual = target.run(loaded, feeds)
    if not expected:
        with step(f"running the reference ({label})"):
            if other is not None:
                wanted = other[1].run(other[0], feeds)
            elif label == "torch":
                source = loaded.manifest.source
                wanted = torch_reference(source.ref, feeds, source.weights)
            else:
                wanted = onnx_reference(loaded, feeds)
    return Comparison(loaded, label, dict(feeds), tolerance, compare_outputs(actual, wanted, tolerance))


# ---- bench ---------------------------------------------------------------------------------------
def bench(model: str, targets: Sequence[str], precisions: Sequence[str] = ("fp32",), *,
          batches: Sequence[int] | None = None, progress: Callable[[str, int, int], None] | None = None,
          **config: Any) -> BenchSummary:
    """`vlc bench`: every target x precision x batch cell of `model`, one record each in
    `results` (default ./results); keywords as vlc.bench.runner.BenchConfig takes them."""
    from vlc.bench.runner import BenchConfig, run_bench  # local: startup

    settings = BenchConfig(model, list(targets), list(precisions), list(batches) if batches else None, **config)
    return run_bench(settings) if progress is None else run_bench(settings, progress)
