"""`vlc run ARTIFACT`: run a compiled artifact (or a bare .onnx file) once on given or generated inputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from vlc.cli import console
from vlc.cli.options import build_spec
from vlc.errors import InputError
from vlc.outdir import claim_output_dir
from vlc.plugin_manager import get_target

if TYPE_CHECKING:  # numpy is imported by the command when it runs, not to print --help
    import numpy as np


# Compiled files that only run from the artifact `vlc compile` writes around them (its manifest
# holds the signature, batch range and build settings), with the target that builds each.
COMPILED_FILES = {".engine": ("TensorRT engine", "trt"), ".plan": ("TensorRT engine", "trt"),
                  ".om": ("Ascend offline model", "ascend310p")}


def open_artifact(path: Path) -> tuple[Any, Any]:
    """The artifact and the target that built it (the target must be registered here). A bare
    .onnx file runs as an onnxruntime fp32 artifact built on the fly in a temporary directory."""
    from vlc.artifact import Artifact

    suffix = path.suffix.lower()
    if suffix == ".onnx" and path.is_file():
        return onnx_file_artifact(path)
    if suffix in COMPILED_FILES and path.is_file():
        kind, target = COMPILED_FILES[suffix]
        raise InputError(f"{path} is a bare {kind}; vlc runs the artifact directory `vlc compile` writes "
                         "(its manifest holds the inputs, batch range and build settings)",
                         fix=f"build one from the ONNX model: vlc compile MODEL.onnx -t {target} -o DIR, "
                             "then pass DIR")
    artifact = Artifact.load(path)
    return artifact, get_target(artifact.target)


def onnx_file_artifact(path: Path) -> tuple[Any, Any]:
    """An onnxruntime fp32 CPU artifact of the ONNX file as it is (no simplifier, no passes), in a
    temporary directory removed when vlc exits."""
    import atexit
    import shutil
    import tempfile

    from vlc.frontend.pipeline import FrontendOptions, prepare

    target = get_target("onnxruntime")
    target.require_available()
    spec = build_spec(target, "fp32", None, [], None, [], "cpu")
    scratch = Path(tempfile.mkdtemp(prefix="vlc-onnx-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    with console.progress(f"building an onnxruntime artifact of {path.name}"):
        source = prepare(str(path.resolve()), cache_dir=scratch / "cache",
                         options=FrontendOptions(simplify=False, passes=(), parity=False))
        artifact = target.compile(source, spec, scratch / "artifact")
    artifact.transient_of = path  # records name the file, not a directory removed at exit
    console.info(f"{path}: running it through onnxruntime (fp32, cpu), built in a temporary directory; "
                 f"to keep an artifact: vlc compile {path} -t onnxruntime -o DIR")
    return artifact, target


def save_input_files(feeds: dict[str, np.ndarray], directory: Path | None) -> list[str]:
    """--save-inputs DIR: write the feeds (claimed as a vlc inputs folder); the paths written."""
    if directory is None:
        return []
    from vlc.inputs import save_inputs

    return [str(p) for p in save_inputs(feeds, claim_output_dir(directory, "inputs", option="--save-inputs",
                                                                create=True))]


def output_rows(outputs: dict[str, np.ndarray]) -> list[list[Any]]:
    from vlc.inputs import array_stats

    rows = []
    for name, array in outputs.items():
        s = array_stats(array)
        rows.append([name, "x".join(map(str, s["shape"])) or "scalar", s["dtype"], s.get("min"), s.get("max"),
                     s.get("mean"), s.get("std")])
    return rows


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        artifact_dir: Path = typer.Argument(..., metavar="ARTIFACT", help="Directory written by `vlc compile`, "
                                            "or an .onnx file (run through onnxruntime as it is)."),
        inputs: list[str] = typer.Option([], "--input", "-i", help="Input file: .npy (name from the stem, or "
                                         "name=file.npy), .npz, .pb, Polygraphy .json (--save-inputs), or a "
                                         "directory of them; repeatable."),
        batch: int | None = typer.Option(None, "--batch", "-b", help="Batch of generated inputs "
                                            "(default: the compiled opt batch)."),
        seed: int = typer.Option(0, "--seed", help="Seed of generated inputs."),
        output: Path | None = typer.Option(None, "-o", "--output",
                                              help="Save outputs here (.npy each + outputs.npz)."),
        save_inputs: Path | None = typer.Option(None, "--save-inputs", metavar="DIR",
                                                   help="Save the inputs used here (.npy each, inputs.npz "
                                                        "and Polygraphy's inputs.json)."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    ) -> None:
        """Run an artifact (or a bare .onnx file) once and print its outputs' shapes and statistics."""
        from vlc.frontend.feeds import artifact_inputs
        from vlc.inputs import array_stats, nonfinite_notes, save_outputs

        if output is not None:
            claim_output_dir(output, "run-outputs")  # before running: refuse someone else's folder early
        if save_inputs is not None:
            claim_output_dir(save_inputs, "inputs", option="--save-inputs")
        artifact, target = open_artifact(artifact_dir)
        if inputs and batch is not None:
            raise InputError("--batch applies to generated inputs, not to --input files",
                             fix="drop --batch; the files' first axis is the batch")
        feeds = artifact_inputs(artifact, files=inputs, batch=batch, seed=seed)
        for note in nonfinite_notes(feeds):
            console.info(f"warning: {note}")
        saved_inputs = save_input_files(feeds, save_inputs)
        start = time.perf_counter()
        with console.progress(f"running {artifact.path.name}"):
            outputs = target.run(artifact, feeds)
        seconds = time.perf_counter() - start
        saved = [str(p) for p in save_outputs(outputs, claim_output_dir(output, "run-outputs", create=True))] \
            if output else []
        summary = {"artifact": str(artifact_dir), "target": artifact.target,
                   "precision": artifact.manifest["precision"], "device": artifact.spec.device,
                   "inputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in feeds.items()},
                   "input_source": "files" if inputs else f"generated (seed {seed})",
                   "outputs": {k: array_stats(v) for k, v in outputs.items()},
                   "seconds": round(seconds, 4), "saved": saved, "saved_inputs": saved_inputs}
        if json_out:
            console.emit_json(summary)
            return
        shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))} {v.dtype.name}" for k, v in feeds.items())
        console.out.print(f"{artifact.target} {summary['precision']} on {summary['device']}: "
                          f"inputs {summary['input_source']}: {shapes}", highlight=False)
        console.table(f"outputs of {artifact_dir} ({seconds * 1000:.1f} ms including loading)",
                      ["output", "shape", "dtype", "min", "max", "mean", "std"], output_rows(outputs))
        if saved:
            console.out.print(f"saved outputs to {output}", highlight=False)
        if saved_inputs:
            console.out.print(f"saved inputs to {save_inputs}", highlight=False)
