"""`vlc compare ARTIFACT`: the artifact's outputs against a reference on the same inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vlc import api
from vlc.api import is_torch_ref, onnx_reference, torch_reference
from vlc.cli import console
from vlc.cli.export_cmd import print_accuracy
from vlc.cli.run_cmd import open_artifact
from vlc.errors import InputError

__all__ = ["cosine_text", "is_torch_ref", "onnx_reference", "register", "table_view", "torch_reference"]

def cosine_text(value: Any) -> Any:
    """A cosine with 8 significant digits: 0.99998 must read apart from a 0.99999 threshold."""
    return f"{value:.8g}" if isinstance(value, float) and value == value else value


def table_view(accuracy: dict[str, Any]) -> dict[str, Any]:
    """The accuracy report for the table: cosines written out in full, the rest as they are."""
    return {**accuracy, "outputs": [{**o, "cosine": cosine_text(o["cosine"])} for o in accuracy["outputs"]]}


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        artifact_dir: Path = typer.Argument(..., metavar="ARTIFACT", help="Directory written by `vlc compile`."),
        reference: str | None = typer.Option(None, "--reference", "-r", help="torch (the original model, CPU "
                                                "fp32), onnx (the source graph in ONNX Runtime CPU fp32), or "
                                                "another artifact directory. Default: torch for PyTorch models, "
                                                "else onnx."),
        expected: list[str] = typer.Option([], "--expected", help="Reference outputs from files (.npy, .npz, "
                                           ".pb, or a directory) instead of running a reference; repeatable."),
        inputs: list[str] = typer.Option([], "--input", "-i", help="Input files (as for `vlc run`); default: "
                                         "generated."),
        batch: int | None = typer.Option(None, "--batch", "-b", help="Batch of generated inputs."),
        seed: int = typer.Option(0, "--seed", help="Seed of generated inputs."),
        atol: float | None = typer.Option(None, "--atol", help="Absolute tolerance (default per precision)."),
        rtol: float | None = typer.Option(None, "--rtol", help="Relative tolerance (default per precision)."),
        min_cosine: float | None = typer.Option(None, "--min-cosine", help="Minimum cosine similarity."),
        json_out: bool = typer.Option(False, "--json", help="Print the accuracy report as JSON."),
    ) -> None:
        """Compare an artifact's outputs with a reference; exit 4 when they differ beyond tolerance."""
        if inputs and batch is not None:  # before anything runs
            raise InputError("--batch applies to generated inputs, not to --input files",
                             fix="drop --batch; the files' first axis is the batch")
        artifact, _ = open_artifact(artifact_dir)
        if reference is not None and reference not in ("torch", "onnx"):
            reference = open_artifact(Path(reference))[0]
        result = api.compare(artifact, reference, expected=expected, files=inputs, batch=batch, seed=seed,
                             atol=atol, rtol=rtol, min_cosine=min_cosine, step=console.progress)
        summary, label, tolerance, report = result.to_json(), result.reference, result.tolerance, result.report
        if json_out:
            console.emit_json(summary)
        else:
            tol = ", ".join(f"{k} {v}" for k, v in tolerance.to_json().items() if v is not None)
            print_accuracy(f"{artifact.target} {summary['precision']} ({artifact.path}) vs {label}; "
                           f"tolerance: {tol}", table_view(report.to_json()))
        result.raise_for_failure()
        if not json_out:
            console.out.print(f"passed: {len(report.outputs)} output(s) within tolerance of {label}",
                              highlight=False)
