"""`vlc bench MODEL --targets ... --precisions ... --batch ...`: a resumable sweep, one record per cell."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from vlc.cli import console
from vlc.cli.profile_cmd import parse_batches, timing_settings
from vlc.errors import InputError, VlcError
from vlc.outdir import claim_output_dir, read_marker, write_marker


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError(f"--{what} is empty", fix=f"give a comma-separated list of {what}")
    return list(dict.fromkeys(names))


class CellsFailed(VlcError):
    """Some cells raised; their records say why. Everything else was measured and written."""

    exit_code = 1


def _claim_outputs(results: Path, artifacts: Path, emit: Path | None) -> list[tuple[Path, str]]:
    """Every folder the sweep writes into, checked before anything runs (see vlc.outdir)."""

    wanted = [(results, "results", "--results"), (artifacts, "bench-artifacts", "--artifacts")]
    if emit is not None:
        wanted.append((emit, "bundles", "--emit"))
    return [(claim_output_dir(path, kind, option=option), kind) for path, kind, option in wanted]


def _mark_outputs(outputs: list[tuple[Path, str]]) -> None:
    """Mark the folders the sweep created, so later runs know them as vlc's."""

    for path, kind in outputs:
        if path.is_dir() and read_marker(path) != kind:
            with contextlib.suppress(InputError):  # a read-only folder: the records are what matters
                write_marker(path, kind)


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        model: str = typer.Argument(..., help="Example name, file.py:factory, package.module:factory, or .onnx."),
        targets: str = typer.Option("torch,onnxruntime", "--targets", "-t", help="Comma-separated targets; "
                                    "an entry may carry target options, name:key=value[:key=value], e.g. "
                                    "torch,torch:mode=compile (each variant is its own column)."),
        precisions: str = typer.Option("fp32", "--precisions", "-p", help="Comma-separated precisions, "
                                       "e.g. fp32,fp16."),
        batch: str | None = typer.Option(None, "--batch", "-b", help="Batch sizes, e.g. 1,8,32 "
                                            "(default: the model's own)."),
        results: Path = typer.Option(Path("results"), "--results", help="Results directory; one JSON record "
                                     "per cell is written (or replaced) there. `vlc report` reads it."),
        emit: Path | None = typer.Option(None, "--emit", help="Write deploy bundles here for targets that "
                                            "cannot run on this machine but can emit one (e.g. ascend)."),
        emit_targets: str | None = typer.Option(None, "--emit-targets", help="Targets that write bundles "
                                                   "(default with --emit: those unavailable here)."),
        warmup: int = typer.Option(10, "--warmup", help="Warm-up iterations per cell."),
        iterations: int | None = typer.Option(None, "--iterations", "-n", help="Timed iterations (default 50)."),
        duration: float | None = typer.Option(None, "--duration", help="Time each cell for this many seconds."),
        device: str | None = typer.Option(None, "--device", help="cpu or cuda for every target (default: "
                                             "each target's accelerator when present, else cpu)."),
        machine: str | None = typer.Option(None, "--machine", help="Machine name in the records "
                                              "(default: the host name)."),
        artifacts: Path = typer.Option(Path(".vlc/bench"), "--artifacts", help="Where compiled artifacts "
                                       "are kept (reused when the source graph and spec match)."),
        force: bool = typer.Option(False, "--force", help="Measure finished cells again."),
        no_transfers: bool = typer.Option(False, "--no-transfers", help="Time with inputs and outputs "
                                          "resident on the device where the target can (GPU compute time)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the generated inputs."),
        graph: str = typer.Option("normalized", "--graph", help="normalized (default): the front end's graph; "
                                  "raw: the plain exporter output (no simplifier, no passes), its targets "
                                  "labelled NAME@raw."),
        cache_dir: Path | None = typer.Option(None, help="Front-end cache (default: $VLC_CACHE, else ~/.cache/vlc)."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary of the cells."),
    ) -> None:
        """Export once, compile each target x precision, check accuracy, profile every batch size."""
        from vlc.bench import BenchConfig, run_bench  # local: startup
        from vlc.bench.variants import split_entries  # local: startup

        outputs = _claim_outputs(results, artifacts, emit)
        settings = timing_settings(warmup, iterations, duration, include_transfers=not no_transfers)
        entries = split_entries(targets)
        emit_entries = split_entries(emit_targets) if emit_targets is not None else None
        for what, given in (("targets", entries), ("emit-targets", emit_entries)):
            if given == []:
                raise InputError(f"--{what} is empty", fix=f"give a comma-separated list of {what}")
        config = BenchConfig(
            model=model, targets=entries, precisions=_names(precisions, "precisions"),
            batches=parse_batches(batch) if batch is not None else None, results=results, artifacts=artifacts,
            emit=emit, emit_targets=emit_entries,
            settings=settings, device=device, machine=machine, force=force, seed=seed, cache_dir=cache_dir,
            graph=graph)
        with console.progress(f"bench {model}") as bar:
            task = bar.task_ids[0]
            logged = [0]

            def progress(text: str, done: int, total: int) -> None:
                bar.update(task, description=f"bench {model} [{done}/{total}]: {text}",
                           total=total or None, completed=done)
                if done > logged[0] and not console.err.is_terminal:  # logs: one line per finished cell
                    logged[0] = done
                    console.info(f"[{done}/{total}] {text}")

            try:
                summary = run_bench(config, progress)
            finally:
                _mark_outputs(outputs)
        if json_out:
            console.emit_json(summary.to_json())
        else:
            rows = []
            for r in summary.written + summary.skipped:
                acc = "—" if r.accuracy is None else ("pass" if r.accuracy.passed else "FAIL")
                note = ("earlier run" if r in summary.skipped else "") or r.reason or r.bundle or ""
                rows.append([r.target, r.precision, r.batch, r.status, r.median_ms, r.throughput_per_s, acc,
                             None if r.utilisation is None else f"{r.utilisation:.2%}", note])
            console.table(f"bench {summary.model} on {summary.machine}: median latency in ms per call",
                          ["target", "precision", "batch", "status", "median ms", "samples/s", "accuracy",
                           "of peak", "note"], rows)
            console.out.print(f"{len(summary.written)} record(s) written to {summary.results}, "
                              f"{len(summary.skipped)} cell(s) already done; "
                              f"`vlc report {summary.results} -o report.html` puts them side by side",
                              highlight=False)
        if summary.failed:
            raise CellsFailed(f"{len(summary.failed)} of {len(summary.written)} cell(s) failed",
                              where=str(summary.results),
                              fix="the 'failed' rows say why; fix it and rerun: finished cells are skipped")
