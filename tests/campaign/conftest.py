"""Campaign tests: a campaign file writer and records by cell."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every test node binds to 127.0.0.1 and the driver must reach them there: with this Ray
# resolves "localhost" addresses to the loopback one instead of the host's outward address.
# Read when ray is first imported, so it is set before any test imports it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

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


@pytest.fixture
def write_campaign(tmp_path: Path):
    def write(*runs: str, name: str = "campaign.toml", results: Path | None = None, **top: str) -> Path:
        path = tmp_path / name
        path.write_text(campaign_text(results or tmp_path / "results", *runs, **top))
        return path

    return write


def by_cell(records) -> dict:
    return {(r.model, r.target, r.precision, r.batch): r for r in records}
