"""`vlc run ARTIFACT`: run a compiled artifact once on given or generated inputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from vlc.cli import console

if TYPE_CHECKING:  # numpy is imported by the command when it runs, not to print --help
    import numpy as np


def open_artifact(path: Path) -> tuple[Any, Any]:
    """The artifact and the target that built it (the target must be registered here)."""
    from vlc.artifact import Artifact
    from vlc.plugin_manager import get_target

    artifact = Artifact.load(path)
    return artifact, get_target(artifact.target)


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
        artifact_dir: Path = typer.Argument(..., metavar="ARTIFACT", help="Directory written by `vlc compile`."),
        inputs: list[str] = typer.Option([], "--input", "-i", help="Input file: .npy (name from the stem, or "
                                         "name=file.npy), .npz, .pb, or a directory of them; repeatable."),
        batch: Optional[int] = typer.Option(None, "--batch", "-b", help="Batch of generated inputs "
                                            "(default: the compiled opt batch)."),
        seed: int = typer.Option(0, "--seed", help="Seed of generated inputs."),
        output: Optional[Path] = typer.Option(None, "-o", "--output",
                                              help="Save outputs here (.npy each + outputs.npz)."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    ) -> None:
        """Run an artifact once and print its outputs' shapes and statistics."""
        from vlc.errors import InputError
        from vlc.inputs import array_stats, artifact_inputs, nonfinite_notes, save_outputs
        from vlc.outdir import claim_output_dir

        artifact, target = open_artifact(artifact_dir)
        if output is not None:
            claim_output_dir(output, "run-outputs")  # before running: refuse someone else's folder early
        if inputs and batch is not None:
            raise InputError("--batch applies to generated inputs, not to --input files",
                             fix="drop --batch; the files' first axis is the batch")
        feeds = artifact_inputs(artifact, files=inputs, batch=batch, seed=seed)
        for note in nonfinite_notes(feeds):
            console.info(f"warning: {note}")
        start = time.perf_counter()
        with console.progress(f"running {artifact.path.name}"):
            outputs = target.run(artifact, feeds)
        seconds = time.perf_counter() - start
        saved = [str(p) for p in save_outputs(outputs, claim_output_dir(output, "run-outputs", create=True))] \
            if output else []
        summary = {"artifact": str(artifact.path), "target": artifact.target,
                   "precision": artifact.manifest["precision"], "device": artifact.spec.device,
                   "inputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in feeds.items()},
                   "input_source": "files" if inputs else f"generated (seed {seed})",
                   "outputs": {k: array_stats(v) for k, v in outputs.items()},
                   "seconds": round(seconds, 4), "saved": saved}
        if json_out:
            console.emit_json(summary)
            return
        shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))} {v.dtype.name}" for k, v in feeds.items())
        console.out.print(f"{artifact.target} {summary['precision']} on {summary['device']}: "
                          f"inputs {summary['input_source']}: {shapes}", highlight=False)
        console.table(f"outputs of {artifact.path} ({seconds * 1000:.1f} ms including loading)",
                      ["output", "shape", "dtype", "min", "max", "mean", "std"], output_rows(outputs))
        if saved:
            console.out.print(f"saved outputs to {output}", highlight=False)
