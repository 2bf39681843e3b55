"""`vlc compare ARTIFACT`: the artifact's outputs against a reference on the same inputs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from vlc.cli import console
from vlc.cli.export_cmd import print_accuracy
from vlc.cli.run_cmd import open_artifact
from vlc.errors import AccuracyError, InputError

if TYPE_CHECKING:  # numpy is imported by the command when it runs, not to print --help
    import numpy as np


def is_torch_ref(ref: str | None) -> bool:
    return bool(ref) and not str(ref).lower().endswith(".onnx")


def torch_reference(ref: str, feeds: Mapping[str, np.ndarray], weights: str | None = None
                    ) -> dict[str, np.ndarray]:
    """The original PyTorch model (with the weights it was compiled with), true fp32 on the CPU."""
    from vlc.frontend.loader import load_model
    from vlc.measure import REFERENCE_TORCH, reference_outputs
    from vlc.model import ModelSource

    source = load_model(ref, weights=weights)
    if not isinstance(source, ModelSource):
        raise InputError(f"--reference torch needs a PyTorch model; the artifact was built from {ref}",
                         fix="use --reference onnx")
    return reference_outputs(REFERENCE_TORCH, source, feeds)


def onnx_reference(artifact: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The normalized source graph in ONNX Runtime on the CPU, fp32."""
    from vlc.measure import REFERENCE_ONNX, reference_outputs

    recorded = artifact.manifest.get("source", {}).get("onnx")
    onnx_path = Path(artifact.path) / recorded if recorded else Path(artifact.path) / "source.onnx"
    if not onnx_path.is_file():
        raise InputError(f"the artifact's source graph {onnx_path} no longer exists",
                         where=str(artifact.path),
                         fix="recompile with `vlc compile ... --force`, or use --reference torch")
    return reference_outputs(REFERENCE_ONNX, onnx_path, feeds)


def cosine_text(value: Any) -> Any:
    """A cosine with 8 significant digits: 0.99998 must read apart from a 0.99999 threshold."""
    return f"{value:.8g}" if isinstance(value, float) and value == value else value


def table_view(accuracy: dict[str, Any]) -> dict[str, Any]:
    """The accuracy report for the table: cosines written out in full, the rest as they are."""
    return {**accuracy, "outputs": [{**o, "cosine": cosine_text(o["cosine"])} for o in accuracy["outputs"]]}


def resolve_reference(reference: str | None, artifact: Any) -> str:
    ref = artifact.manifest.get("source", {}).get("ref")
    if reference is None:
        return "torch" if is_torch_ref(ref) else "onnx"
    return reference


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
        from vlc.accuracy import compare_outputs, default_tolerance, tolerance_with
        from vlc.frontend.feeds import artifact_inputs
        from vlc.inputs import load_arrays

        artifact, target = open_artifact(artifact_dir)
        if expected and reference is not None:
            raise InputError("--expected and --reference are exclusive", fix="give one of them")
        if inputs and batch is not None:
            raise InputError("--batch applies to generated inputs, not to --input files",
                             fix="drop --batch; the files' first axis is the batch")
        other = None
        label = "expected outputs" if expected else resolve_reference(reference, artifact)
        if not expected and label not in ("torch", "onnx"):
            other = open_artifact(Path(label))
            label = f"artifact {other[0].path}"
        tolerance = tolerance_with(default_tolerance(artifact.manifest["precision"]), atol=atol, rtol=rtol,
                                   min_cosine=min_cosine)
        feeds = artifact_inputs(artifact, files=inputs, batch=batch, seed=seed)
        wanted: dict[str, np.ndarray] = {}
        if expected:
            wanted = load_arrays(expected, artifact.signature.output_names, what="output")
        with console.progress(f"running {artifact.path.name}"):
            actual = target.run(artifact, feeds)
        with console.progress(f"running the reference ({label})"):
            if expected:
                pass
            elif other is not None:
                wanted = other[1].run(other[0], feeds)
            elif label == "torch":
                source = artifact.manifest["source"]
                weights = source.get("weights") or (source.get("frontend_options") or {}).get("weights")
                wanted = torch_reference(source["ref"], feeds, weights)
            else:
                wanted = onnx_reference(artifact, feeds)
        report = compare_outputs(actual, wanted, tolerance)
        summary = {"artifact": str(artifact.path), "target": artifact.target,
                   "precision": artifact.manifest["precision"], "reference": label,
                   "inputs": {k: list(v.shape) for k, v in feeds.items()}, **report.to_json()}
        if json_out:
            console.emit_json(summary)
        else:
            tol = ", ".join(f"{k} {v}" for k, v in tolerance.to_json().items() if v is not None)
            print_accuracy(f"{artifact.target} {summary['precision']} ({artifact.path}) vs {label}; "
                           f"tolerance: {tol}", table_view(report.to_json()))
        if not report.passed:
            failing = [o for o in report.outputs if not o.passed]
            detail = "; ".join(f"{o.name}: {o.reason}" for o in failing[:3])
            raise AccuracyError(f"{len(failing)} of {len(report.outputs)} output(s) differ from {label}: {detail}",
                                where=str(artifact.path),
                                fix="loosen --atol/--rtol/--min-cosine only if this precision explains it")
        if not json_out:
            console.out.print(f"passed: {len(report.outputs)} output(s) within tolerance of {label}",
                              highlight=False)
