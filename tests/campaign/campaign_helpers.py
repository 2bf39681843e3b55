"""Helpers of the campaign tests: campaign file text and records by cell."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MLP = f"{ROOT / 'tests' / 'models.py'}:mlp"


def campaign_text(results: Path, *runs: str, **top: str) -> str:
    head = [f'results = "{results}"'] + [f"{k} = {v}" for k, v in top.items()]
    return "\n".join(head) + "\n" + "\n".join(runs)


def _table(resources: dict[str, float]) -> str:
    return "{ " + ", ".join(f'"{k}" = {v}' for k, v in resources.items()) + " }"


def run_table(targets: list[str], *, requires: dict[str, float] | None = None, batches=(1, 2),
              precisions=("fp32",), model: str = MLP, timing: str = "warmup = 1\niterations = 5",
              build_requires: dict[str, float] | None = None, name: str | None = None) -> str:
    return (f'[[run]]\nmodels = ["{model}"]\ntargets = {list(targets)!r}\n'.replace("'", '"')
            + (f'name = "{name}"\n' if name else "")
            + f"precisions = {list(precisions)!r}\nbatches = {list(batches)!r}\n".replace("'", '"')
            + f"{timing}\nrequires = {_table(requires or {})}\n"
            + (f"build_requires = {_table(build_requires)}\n" if build_requires is not None else ""))


def by_cell(records) -> dict:
    return {(r.model, r.target, r.precision, r.batch): r for r in records}
