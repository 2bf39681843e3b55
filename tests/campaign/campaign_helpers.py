"""Helpers of the campaign tests: campaign file text and records by cell."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MLP = f"{ROOT / 'tests' / 'models.py'}:mlp"


def campaign_text(results: Path, *runs: str, **top: str) -> str:
    head = [f'results = "{results}"'] + [f"{k} = {v}" for k, v in top.items()]
    return "\n".join(head) + "\n" + "\n".join(runs)


def run_table(targets: list[str], *, requires: dict[str, float] | None = None, batches=(1, 2),
              precisions=("fp32",), model: str = MLP, timing: str = "warmup = 1\niterations = 5") -> str:
    req = ", ".join(f'"{k}" = {v}' for k, v in (requires or {}).items())
    return (f'[[run]]\nmodels = ["{model}"]\ntargets = {list(targets)!r}\n'.replace("'", '"')
            + f"precisions = {list(precisions)!r}\nbatches = {list(batches)!r}\n".replace("'", '"')
            + f"{timing}\nrequires = {{ {req} }}\n")


def by_cell(records) -> dict:
    return {(r.model, r.target, r.precision, r.batch): r for r in records}
