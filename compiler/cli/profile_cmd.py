"""`vlc profile ARTIFACT --batch 1,8,32`: latency and throughput per batch size, one record each."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from vlc import api
from vlc.api import artifact_flops, artifact_model_name, artifact_record, environment
from vlc.cli import console
from vlc.cli.run_cmd import open_artifact, save_input_files
from vlc.errors import InputError
from vlc.outdir import check_output_file, claim_output_dir
from vlc.records import write_record
from vlc.timing import ProfileSettings

__all__ = ["artifact_flops", "artifact_model_name", "artifact_record", "environment",  # vlc.api's
           "parse_batches", "print_layers", "register", "timing_settings", "write_records"]


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"cannot read --batch '{text}'", fix="use a comma-separated list, e.g. 1,8,32") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"--batch '{text}' needs positive batch sizes", fix="e.g. --batch 1,8,32")
    return list(dict.fromkeys(values))


def timing_settings(warmup: int, iterations: int | None, duration: float | None, **more: Any) -> Any:
    """--warmup/--iterations/--duration (shared by `vlc profile` and `vlc bench`) as ProfileSettings."""
    if iterations is not None and duration is not None:
        raise InputError("--iterations and --duration are exclusive", fix="give one of them")
    if warmup < 0 or (iterations is not None and iterations < 1) or (duration is not None and duration <= 0):
        raise InputError("--warmup must be >= 0, --iterations >= 1 and --duration > 0",
                         fix="e.g. --warmup 10 --iterations 100")
    return ProfileSettings(warmup=warmup, iterations=iterations or 50, duration_s=duration, **more)


LAYER_ROWS = 15


def print_layers(target: str, result: Any) -> None:
    """The slowest layers (TensorRT) or operator types (ONNX Runtime) of one batch, or why none."""
    if layers := result.extra.get("layers"):
        rows = [[row["name"], row["mean_ms"], row["median_ms"], row["percent"]] for row in layers[:LAYER_ROWS]]
        console.table(f"batch {result.batch}: slowest of {len(layers)} layers (TensorRT's profiler, ms)",
                      ["layer", "mean", "median", "%"], rows)
    elif operators := (result.extra.get("per_operator") or {}).get("operators"):
        rows = [[o["op"], o["nodes"], o["ms_per_run"], 100.0 * o["share"]] for o in operators[:LAYER_ROWS]]
        console.table(f"batch {result.batch}: operator types by time (ONNX Runtime's profiler, ms per run)",
                      ["operator", "nodes", "ms", "%"], rows)
    else:
        console.info(f"[yellow]warning[/] (batch {result.batch}): {target} gives no per-layer profile", markup=True)


def write_records(path: Path, records: list[Any]) -> list[Path]:
    """`FILE.json`: a JSON list of records; otherwise a results directory that `vlc report` reads."""

    if path.suffix == ".json":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps([r.to_json() for r in records], indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
        return [path]
    return [write_record(path, r) for r in records]


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile(
        artifact_dir: Path = typer.Argument(..., metavar="ARTIFACT", help="Directory written by `vlc compile`, "
                                            "or an .onnx file (profiled through onnxruntime as it is)."),
        batch: str | None = typer.Option(None, "--batch", "-b", help="Batch sizes to sweep, e.g. 1,8,32 "
                                            "(default: the compiled opt batch)."),
        warmup: int = typer.Option(10, "--warmup", help="Warm-up iterations per batch."),
        iterations: int | None = typer.Option(None, "--iterations", "-n", help="Timed iterations (default 50)."),
        duration: float | None = typer.Option(None, "--duration", help="Time for this many seconds instead."),
        no_transfers: bool = typer.Option(False, "--no-transfers", help="Exclude host<->device copies where "
                                          "the target can (GPU targets); CPU targets always include them."),
        seed: int = typer.Option(0, "--seed", help="Seed of generated inputs."),
        record: Path | None = typer.Option(None, "--record", help="Write the records: FILE.json (a JSON "
                                              "list) or a results directory that `vlc report` reads."),
        machine: str | None = typer.Option(None, "--machine", help="Machine name in the records "
                                              "(default: the host name)."),
        save_inputs: Path | None = typer.Option(None, "--save-inputs", metavar="DIR",
                                                   help="Save the inputs of each batch in DIR/batch-N "
                                                        "(.npy each, inputs.npz, Polygraphy's inputs.json)."),
        json_out: bool = typer.Option(False, "--json", help="Print the records as JSON."),
        per_layer: bool = typer.Option(False, "--per-layer", help="Also time each layer (TensorRT's "
                                       "profiler) or operator type (ONNX Runtime's profiler), in its own "
                                       "runs after the timed ones; printed and kept in the records."),
        cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="Replay the timed calls as a CUDA "
                                         "graph where the target captures one at profile time (trt); "
                                         "onnxruntime captures per its -O cuda_graph build option."),
    ) -> None:
        """Measure latency (min/mean/median/p90/p95/p99) and throughput over a batch sweep."""
        settings = timing_settings(warmup, iterations, duration, include_transfers=not no_transfers,
                                   per_layer=per_layer, cuda_graph=cuda_graphs)
        if record is not None:  # before any timing: a file name, or a results folder vlc may write

            check_output_file(record, option="--record") if record.suffix == ".json" else \
                claim_output_dir(record, "results", option="--record")
        if save_inputs is not None:
            save_inputs = claim_output_dir(save_inputs, "inputs", option="--save-inputs", create=True)
        artifact, _ = open_artifact(artifact_dir)

        with console.progress(f"profiling {artifact.path.name}") as bar:
            def each_batch(b: int, feeds: Any) -> None:  # shown, and saved with --save-inputs
                bar.update(bar.task_ids[0], description=f"profiling {artifact.path.name}, batch {b}")
                if save_inputs is not None:
                    save_input_files(feeds, save_inputs / f"batch-{b}")

            measured = api.profile(artifact, batches=parse_batches(batch) if batch is not None else None,
                                   settings=settings, seed=seed, machine=machine, on_batch=each_batch)
        records, results, env = measured.records, measured.results, measured.environment
        written = write_records(record, records) if record is not None else []
        if json_out:
            console.emit_json([r.to_json() for r in records])
            return
        transfers = {r.includes_transfers for r in results}
        note = ("host<->device transfers included" if transfers == {True} else
                "host<->device transfers excluded" if transfers == {False} else "transfers: see column")
        rows = [[r.batch, r.latency.min, r.latency.mean, r.latency.median, r.latency.p90, r.latency.p95,
                 r.latency.p99, r.latency.cv, r.throughput, r.latency.count, r.includes_transfers]
                for r in results]
        console.table(f"{artifact.target} {artifact.manifest.precision} on {artifact.spec.device} "
                      f"({artifact.path}); latency in ms per call, {note}"
                      + "".join(f"; timed by the {t}" for t in sorted({str(r.extra.get("timing") or "")
                                                                         for r in results} - {""})),
                      ["batch", "min", "mean", "median", "p90", "p95", "p99", "cv", "samples/s",
                       "iterations", "transfers"], rows)
        versions = ", ".join(f"{k} {v}" for k, v in env["target_versions"].items())
        console.out.print(f"machine: {machine or env['host']} ({env['cpu'].get('model')}); {versions}",
                          highlight=False)
        for r in results:
            if per_layer:
                print_layers(artifact.target, r)
            if cuda_graphs and not r.extra.get("cuda_graph"):
                ort = artifact.target.startswith("onnxruntime")
                decides = " (its -O cuda_graph build option decides)" if ort else ""
                console.info(f"[yellow]warning[/] (batch {r.batch}): {artifact.target} did not replay a CUDA graph "
                             f"at profile time{decides}", markup=True)
            if r.extra.get("trtexec_summary"):  # TensorRT's results also in trtexec's own format
                console.err.print(f"batch {r.batch}:\n{r.extra['trtexec_summary']}", highlight=False)
            for warning in r.warnings:
                console.info(f"[yellow]warning[/] (batch {r.batch}): {console.escape(warning)}", markup=True)
        if record is not None:
            console.out.print(f"wrote {len(records)} record(s) to {record}"
                              f"{'' if written == [record] else f' ({len(written)} files)'}", highlight=False)
