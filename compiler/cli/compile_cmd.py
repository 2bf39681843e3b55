"""`vlc compile MODEL --target T`: front end, then one target's compiler, into an artifact directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vlc import api
from vlc.api import absolute_ref, model_name
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
)
from vlc.manifest import Manifest

__all__ = ["absolute_ref", "model_name", "precision_line", "register"]  # the first two live in vlc.api


def precision_line(manifest: Manifest) -> str | None:
    """What the precision pass checked: the worst numbers against fp32 and on which inputs."""
    report = manifest.extra.get("precision") or {}
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
        from vlc.frontend.precision.int8 import int8_summary  # local: loads onnx

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
        built = api.build(model, target, precision=precision, preset=preset, device=device, shapes=shapes or [],
                          batch=batch, options=option or [], output=output, emit=emit, force=force,
                          frontend=frontend_options(exporter, opset, passes, no_simplify, no_parity, weights),
                          cache_dir=cache_dir, input_files=inputs, step=console.progress)
        for note in built.notes:  # why a cached graph or an existing artifact was not reused
            console.info(note)
        artifact, manifest, bundle_only, reused = built.artifact, built.artifact.manifest, built.bundle, built.reused
        frontend_seconds = built.frontend_seconds
        summary: dict[str, Any] = {
            "artifact": str(artifact.path), "target": artifact.target, "precision": manifest.precision,
            "device": artifact.spec.device, "preset": manifest.preset, "reused": reused,
            "build_seconds": manifest.build_seconds,
            "frontend_seconds": frontend_seconds, "frontend_reused": bool(built.source.frontend.get("reused")),
            "batch_range": manifest.batch_range, "files": manifest.files, "tool_versions": manifest.tool_versions,
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
        if manifest.batch_range:
            lo, hi = manifest.batch_range
            console.out.print(f"batch range: {lo}..{hi}", highlight=False)
        if (line := precision_line(artifact.manifest)) is not None:
            console.out.print(line, highlight=False)
            if "FAIL" in line:
                console.info(f"[yellow]warning[/]: the {summary['precision']} graph misses its tolerance "
                             "against fp32 and was kept (strict_precision=false); `vlc debug accuracy` "
                             "shows where it diverges", markup=True)
