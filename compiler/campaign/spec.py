"""Campaign files (TOML): where the results go, how the report is made, and `[[run]]` tables.

    results = "results/campaign"      # relative paths (results, report, artifacts, model files)
    report = "report.html"            # are relative to this file
    published = true                  # the report adds the write-ups' published figures
    baseline = "torch/fp32/cpu"       # the report's speed-up column

    [[run]]
    models = ["tests/models.py:mlp"]
    targets = ["onnxruntime", "torch", "torch:mode=compile"]
    precisions = ["fp32"]
    batches = [1, 8]
    warmup = 5
    iterations = 20                   # or duration = 2.0 (seconds), not both
    transfers = true
    requires = { "vlc/onnxruntime" = 1 }

    [[run]]
    models = ["mobilevit-s@test"]
    targets = ["trt-rtx"]             # an A10 (sm86) engine: timed on a node with such a GPU,
    precisions = ["fp16"]             # built on any node with the toolchain (build_requires'
    requires = { "vlc/trt-sm86" = 1 } # default for trt-rtx: vlc/trt-build-sm86); with no such
                                      # GPU in the cluster the record says built, not timed

Every mistake is one line naming the file, the table and the key (`campaign.toml: [[run]] #2:
key 'batches' must be a list of positive integers, got [0]`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from vlc.bench.variants import resolve
from vlc.errors import InputError
from vlc.spec import Precision
from vlc.timing import ProfileSettings

DEFAULT_RETRIES = 2  # a cell whose node dies runs again this many times on another matching node

_TOP_KEYS = ("results", "artifacts", "report", "published", "baseline", "retries", "run")
_RUN_KEYS = ("name", "models", "targets", "precisions", "batches", "warmup", "iterations", "duration",
             "transfers", "requires", "build_requires", "device", "seed")


@dataclass(frozen=True)
class RunSpec:
    """One `[[run]]` table: its models x target variants x precisions, each cell over its batches."""

    index: int  # 1-based position in the file
    name: str
    models: list[str]
    targets: list[str]
    precisions: list[str]
    batches: list[int] | None  # None: each model's own batch sizes
    settings: ProfileSettings
    requires: dict[str, float] = field(default_factory=dict)  # Ray resources a node must offer
    # where the run's cells may be compiled when not where they are measured; None: each target's
    # own default (vlc.campaign.resources.build_resources), {}: always where measured
    build_requires: dict[str, float] | None = None
    device: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class Campaign:
    path: Path
    results: Path
    artifacts: Path
    report: Path | None
    published: bool
    baseline: str | None
    retries: int
    runs: list[RunSpec]

    @property
    def base(self) -> Path:
        return self.path.parent


class _Where:
    """Builds the one-line errors: `FILE: TABLE: key 'K' must be ...`."""

    def __init__(self, path: Path, table: str):
        self.path, self.table = path, table

    def error(self, key: str | None, problem: str, fix: str | None = None) -> InputError:
        place = f"{self.table}: " if self.table else ""
        what = f"key '{key}' {problem}" if key else problem
        return InputError(f"{self.path}: {place}{what}", fix=fix or "see the Campaigns section of the README")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _strings(where: _Where, data: dict[str, Any], key: str, *, default: list[str] | None = None) -> list[str]:
    if key not in data:
        if default is None:
            raise where.error(key, "is missing", fix=f"add {key} = [...] to the table")
        return default
    value = data[key]
    if isinstance(value, str):
        value = [value]
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and v.strip() for v in value)):
        raise where.error(key, f"must be a non-empty list of strings, got {_describe(value)}")
    return list(dict.fromkeys(v.strip() for v in value))


def _integer(where: _Where, data: dict[str, Any], key: str, default: int | None, minimum: int) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise where.error(key, f"must be an integer >= {minimum}, got {_describe(value)}")
    return value


def _optional_str(where: _Where, data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise where.error(key, f"must be a non-empty string, got {_describe(value)}")
    return value


def _unknown(where: _Where, data: dict[str, Any], known: tuple[str, ...]) -> None:
    extra = sorted(set(data) - set(known))
    if extra:
        raise where.error(extra[0], "is not a campaign key", fix=f"known keys here: {', '.join(known)}")


def _settings(where: _Where, data: dict[str, Any]) -> ProfileSettings:
    warmup = _integer(where, data, "warmup", 10, 0)
    iterations = _integer(where, data, "iterations", None, 1)
    duration = data.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration <= 0:
            raise where.error("duration", f"must be a number of seconds > 0, got {_describe(duration)}")
        if iterations is not None:
            raise where.error("duration", "and 'iterations' are exclusive", fix="give one of them")
    transfers = data.get("transfers", True)
    if not isinstance(transfers, bool):
        raise where.error("transfers", f"must be true or false, got {_describe(transfers)}")
    return ProfileSettings(warmup=warmup or 0, iterations=iterations or 50,
                           duration_s=None if duration is None else float(duration), include_transfers=transfers)


def _requires(where: _Where, data: dict[str, Any], key: str = "requires") -> dict[str, float]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        example = '{ "vlc/trt-sm86" = 1 }' if key == "requires" else '{ "vlc/trt-build-sm86" = 1 }'
        raise where.error(key, f"must be a table of Ray resources, got {_describe(value)}",
                          fix=f"e.g. {key} = {example}")
    for name, amount in value.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
            raise where.error(f"{key}.{name}", f"must be a positive number, got {_describe(amount)}")
    return {name: float(amount) for name, amount in value.items()}


def _check_targets(where: _Where, targets: list[str], precisions: list[str]) -> None:
    try:
        resolve(targets)
    except InputError as exc:
        raise where.error("targets", exc.what, fix=exc.fix) from None
    for p in precisions:
        try:
            Precision.parse(p)
        except InputError as exc:
            raise where.error("precisions", exc.what, fix=exc.fix) from None


def _run(path: Path, index: int, data: Any) -> RunSpec:
    where = _Where(path, f"[[run]] #{index}")
    if not isinstance(data, dict):
        raise where.error(None, "must be a table")
    _unknown(where, data, _RUN_KEYS)
    models = _strings(where, data, "models")
    targets = _strings(where, data, "targets")
    precisions = _strings(where, data, "precisions", default=["fp32"])
    batches = data.get("batches")
    if batches is not None and (not isinstance(batches, list) or not batches or any(
            isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches)):
        raise where.error("batches", f"must be a list of positive integers, got {_describe(batches)}",
                          fix="e.g. batches = [1, 8, 32]")
    _check_targets(where, targets, precisions)
    device = _optional_str(where, data, "device")
    return RunSpec(index=index, name=_optional_str(where, data, "name") or f"run {index}", models=models,
                   targets=targets, precisions=precisions,
                   batches=None if batches is None else list(dict.fromkeys(batches)),
                   settings=_settings(where, data), requires=_requires(where, data),
                   build_requires=_requires(where, data, "build_requires") if "build_requires" in data else None,
                   device=device,
                   seed=_integer(where, data, "seed", 0, 0) or 0)


def _path(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(base / path))  # results, not examples/../results


def parse_campaign(text: str, path: Path) -> Campaign:
    """A campaign from TOML text; `path` names the file in errors and anchors relative paths."""
    top = _Where(path, "")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise top.error(None, f"is not valid TOML: {exc}", fix="fix the syntax at the position given") from None
    _unknown(top, data, _TOP_KEYS)
    runs = data.get("run")
    if not isinstance(runs, list) or not runs:
        raise top.error(None, "has no [[run]] tables", fix="add at least one [[run]] with models and targets")
    base = path.parent
    results = _optional_str(top, data, "results") or "results"
    report = _optional_str(top, data, "report")
    published = data.get("published", False)
    if not isinstance(published, bool):
        raise top.error("published", f"must be true or false, got {_describe(published)}")
    return Campaign(
        path=path, results=_path(base, results),
        artifacts=_path(base, _optional_str(top, data, "artifacts") or ".vlc/campaign"),
        report=None if report is None else _path(base, report), published=published,
        baseline=_optional_str(top, data, "baseline"),
        retries=_integer(top, data, "retries", DEFAULT_RETRIES, 0) or 0,
        runs=[_run(path, i, table) for i, table in enumerate(runs, start=1)])


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign file (every error before any work)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read campaign file: {exc.strerror or exc}", where=str(path),
                         fix="pass the path of a .toml campaign file") from None
    return parse_campaign(text, path)


def model_ref(campaign: Campaign, model: str) -> str:
    """A model entry as the front end takes it: file references relative to the campaign file
    when that file exists there (else as given: an example name, a package.module:factory)."""
    file_part = model.split(":", 1)[0] if ":" in model and not model.endswith(".onnx") else model
    if file_part.endswith((".py", ".onnx")) and not Path(file_part).is_absolute():
        candidate = campaign.base / file_part
        if candidate.exists():
            return str(candidate.resolve()) + model[len(file_part):]  # the same path on every node
    return model
