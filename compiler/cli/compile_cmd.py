"""`vlc compile MODEL --target T`: front end, then one target's compiler, into an artifact directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from vlc.cli import console
from vlc.cli.export_cmd import frontend_options
from vlc.cli.options import (
    BatchOpt,
    CacheDirOpt,
    ExporterOpt,
    ModelArg,
    NoParityOpt,
    NoSimplifyOpt,
    OpsetOpt,
    PassesOpt,
    PrecisionOpt,
    PresetOpt,
    ShapesOpt,
    TargetOpt,
    TargetOptionsOpt,
    WeightsOpt,
    build_spec,
)
from vlc.errors import InputError, TargetUnavailable
from vlc.outdir import claim_output_dir
from vlc.plugin_manager import get_target
from vlc.spec import TargetSpec


def absolute_ref(ref: str) -> str:
    """`file.py:factory` with the file made absolute, so artifacts run from any directory."""
    target, sep, attr = ref.rpartition(":")
    if sep and target.endswith(".py") and Path(target).is_file():
        return f"{Path(target).resolve()}:{attr}"
    return ref


def model_name(source: Any) -> str:
    """A readable name for the default artifact directory."""
    if source.model is not None:
        return source.model.name
    path = Path(source.ref)
    if path.stem == "model" and path.parent.name:  # e.g. onnx test data: <case>/model.onnx
        return path.parent.name
    return path.stem


def _manifest_stamp(out_dir: Path) -> tuple[int, int] | None:
    try:
        stat = (out_dir / "manifest.json").stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def precision_line(manifest: Any) -> str | None:  # a Manifest, or its JSON dict
    """What the precision pass checked: the worst numbers against fp32 and on which inputs."""
    report = (manifest.get("extra") or {}).get("precision") or {}
    outputs = (report.get("accuracy") or {}).get("outputs") or []
    finite = [o for o in outputs if isinstance(o.get("cosine"), (int, float))]
    if not finite:
        return None
    cosine = min(o["cosine"] for o in finite)
    max_abs = max(o["max_abs"] for o in finite)
    inputs = (report.get("check") or {}).get("inputs", "generated inputs")
    line = (f"{report.get('precision', '')} vs fp32 on {inputs}: min cosine {cosine:.6f}, max abs "
            f"{max_abs:.3g}: {'pass' if report.get('passed') else 'FAIL'}")
    if report.get("int8"):  # the share of Conv/MatMul/Gemm MACs left in int8, what stayed in float
        from vlc.frontend.precision.int8 import int8_summary

        line += f"; {int8_summary(report['int8'])}"
    return line


def register(app: typer.Typer) -> None:
    @app.command("compile")
    def compile_(
        model: ModelArg,
        target: TargetOpt,
        precision: PrecisionOpt = "fp32",
        preset: PresetOpt = None,
        device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: the "
                                             "target's first device: cpu for torch/onnxruntime, "
                                             "cuda for trt, npu for ascend)."),
        shapes: ShapesOpt = None,
        batch: BatchOpt = None,
        option: TargetOptionsOpt = None,
        output: Path | None = typer.Option(None, "-o", "--output",
                                              help="Artifact directory "
                                                   "(default artifacts/<model>-<target>-<precision>)."),
        force: bool = typer.Option(False, "--force", help="Rebuild even if a matching artifact exists."),
        emit: Path | None = typer.Option(None, "--emit", help="Write a deploy bundle here for a machine with "
                                            "the target's toolchain instead of building (targets that can, "
                                            "e.g. ascend310p); needs no toolchain here."),
        exporter: ExporterOpt = "auto",
        opset: OpsetOpt = None,
        passes: PassesOpt = None,
        no_simplify: NoSimplifyOpt = False,
        no_parity: NoParityOpt = False,
        weights: WeightsOpt = None,
        cache_dir: CacheDirOpt = None,
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
        inputs: list[str] = typer.Option([], "--input", "-i", help="Input files (.npy, .npz, .pb, Polygraphy "
                                         "JSON): the precision check runs on them, and their shapes size "
                                         "dynamic dims nobody gave a range for; repeatable."),
    ) -> None:
        """Compile a model for one target into an artifact directory (reused when nothing changed)."""
        from vlc.artifact import Artifact
        from vlc.signature import Signature

        # Everything the user typed is checked before the (slow) front end runs.
        backend = get_target(target)
        spec = build_spec(backend, precision, preset, shapes, batch, option, device)
        bundle_only = emit is not None
        if emit is not None:
            if not backend.capabilities.bundles:
                raise InputError(f"target '{backend.name}' cannot write deploy bundles",
                                 fix="drop --emit; `vlc targets --json` lists the targets that can (bundles)")
            if output is not None:
                raise InputError("--emit and -o both say where to write", fix="give one of them")
            claim_output_dir(emit, "bundle", option="--emit")  # before the (slow) front end
        elif output is not None:
            claim_output_dir(output, "artifact")
        backend.validate_spec(TargetSpec.from_json({**spec.to_json(), "shapes": {}}), Signature((), ()))
        status = None if bundle_only else backend.require_available()  # a bundle needs no toolchain here
        if status is not None and status.devices and spec.device not in status.devices:
            raise TargetUnavailable(f"target '{backend.name}' has no {spec.device} device here",
                                    fix=f"devices here: {', '.join(status.devices)} (see `vlc targets`)")
        if spec.batch and spec.shapes:
            raise InputError("--batch and --shapes both set the batch range",
                             fix="give the batch inside --shapes, or use --batch alone")
        options = frontend_options(exporter, opset, passes, no_simplify, no_parity, weights)

        from vlc.frontend.pipeline import prepare

        start = time.perf_counter()
        with console.progress(f"front end: {model}"):
            source = prepare(absolute_ref(model), cache_dir=cache_dir, options=options)
        source.onnx_path = Path(source.onnx_path).resolve()
        frontend_seconds = time.perf_counter() - start
        if inputs:
            from vlc.inputs import load_inputs
            from vlc.shape_choice import from_user_inputs

            source.user_inputs = load_inputs(inputs, source.signature)
            spec, source.input_specs, note = from_user_inputs(source.signature, spec, source.user_inputs,
                                                              source.input_specs)
            if note:
                console.info(note)
            force = True  # an artifact checked on other inputs must not stand for this check
        out_dir = emit or output or Path("artifacts") / f"{model_name(source)}-{backend.name}-{spec.precision.value}"
        if not bundle_only:
            claim_output_dir(out_dir, "artifact")  # the default directory, too, may hold someone's files
        before = _manifest_stamp(out_dir)
        if emit is not None:
            with console.progress(f"writing a {backend.name} deploy bundle of {model_name(source)}"):
                artifact = Artifact.load(backend.emit_bundle(source, spec, emit))
        else:
            with console.progress(f"compiling {model_name(source)} for {backend.name} ({spec.precision.value})"):
                artifact = backend.compile(source, spec, out_dir, force=force)
        for note in (source.frontend.get("cache_note"), artifact.note):
            if note:  # why a cached graph or an existing artifact was not reused
                console.info(note)
        reused = before is not None and before == _manifest_stamp(out_dir)
        summary = {
            "artifact": str(artifact.path), "target": artifact.target, "precision": artifact.manifest["precision"],
            "device": artifact.spec.device, "preset": artifact.manifest.get("preset"), "reused": reused,
            "build_seconds": artifact.manifest.get("build_seconds"),
            "frontend_seconds": round(frontend_seconds, 3), "frontend_reused": bool(source.frontend.get("reused")),
            "batch_range": artifact.manifest.get("batch_range"), "files": artifact.manifest.get("files"),
            "tool_versions": artifact.manifest.get("tool_versions"),
        }
        if json_out:
            console.emit_json(summary)
            return
        state = "deploy bundle written; run its scripts on the target machine" if bundle_only else \
            "reused (nothing changed; --force rebuilds)" if reused else \
            f"built in {summary['build_seconds']:.3g} s"
        console.out.print(f"artifact: {artifact.path}", highlight=False)
        console.out.print(f"{artifact.target} {summary['precision']} on {summary['device']}: {state}; "
                          f"front end {frontend_seconds:.2f} s"
                          f"{' (cached graph)' if summary['frontend_reused'] else ''}", highlight=False)
        if summary["batch_range"]:
            lo, hi = summary["batch_range"]
            console.out.print(f"batch range: {lo}..{hi}", highlight=False)
        if (line := precision_line(artifact.manifest)) is not None:
            console.out.print(line, highlight=False)
            if "FAIL" in line:
                console.info(f"[yellow]warning[/]: the {summary['precision']} graph misses its tolerance "
                             "against fp32 and was kept (strict_precision=false); `vlc debug accuracy` "
                             "shows where it diverges", markup=True)
