"""`vlc run ARTIFACT`: run a compiled artifact (or a bare .onnx file) once on given or generated inputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from vlc import api
from vlc.cli import console
from vlc.inputs import array_stats, nonfinite_notes, save_inputs, save_outputs
from vlc.outdir import claim_output_dir

if TYPE_CHECKING:  # numpy is imported by the command when it runs, not to print --help
    import numpy as np


def open_artifact(path: Path) -> tuple[Any, Any]:
    """The artifact and the target that built it (vlc.api.load); a bare .onnx file is built into a
    temporary onnxruntime artifact, and the user is told how to keep one."""
    artifact, target = api.load(path, step=console.progress)
    if artifact.transient_of is not None:
        console.info(f"{path}: running it through onnxruntime (fp32, cpu), built in a temporary directory; "
                     f"to keep an artifact: vlc compile {path} -t onnxruntime -o DIR")
    return artifact, target


def save_input_files(feeds: dict[str, np.ndarray], directory: Path | None) -> list[str]:
    """--save-inputs DIR: write the feeds (claimed as a vlc inputs folder); the paths written."""
    if directory is None:
        return []

    return [str(p) for p in save_inputs(feeds, claim_output_dir(directory, "inputs", option="--save-inputs",
                                                                create=True))]


def output_rows(outputs: dict[str, np.ndarray]) -> list[list[Any]]:
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
        if output is not None:
            claim_output_dir(output, "run-outputs")  # before running: refuse someone else's folder early
        if save_inputs is not None:
            claim_output_dir(save_inputs, "inputs", option="--save-inputs")
        artifact, target = open_artifact(artifact_dir)
        feeds = api.inputs(artifact, files=inputs, batch=batch, seed=seed)
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
                   "precision": artifact.manifest.precision, "device": artifact.spec.device,
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
