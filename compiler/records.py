"""Bench result records: one JSON file per (model, target, precision, batch, machine).

A record is versioned (`schema`, `schema_version`) and validated on read: a malformed file
is rejected with one line naming the file and the field, never half-read. Records from any
number of machines and directories are merged by `load_records`; `vlc report` reads them.

Layout of a results directory (written by `vlc bench --results DIR`):

    DIR/<machine>/<model>/<target>-<precision>-b<batch>.result.json

Only files ending in RECORD_SUFFIX are read from directories, so artifacts and other JSON
files may live beside them.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlc.errors import InputError
from vlc.outdir import make_dir

SCHEMA = "vlc.bench.result"
SCHEMA_VERSION = 1
RECORD_SUFFIX = ".result.json"
SIZE_MARK, FULL_SIZE = "@", "full"  # an example's size in its name: mobilevit-s@test (full: no mark)

# ok: measured; unavailable: this machine cannot run the cell (reason says why);
# failed: compile/run/profile raised (reason holds the one-line error);
# emitted: a deploy bundle was written for another machine instead of measuring;
# built: the artifact was compiled (here, for a device elsewhere: `build` says what was built)
# and not timed: `reason` says why (no node with the hardware), never a failure.
STATUSES = ("ok", "unavailable", "failed", "emitted", "built")
SAMPLES_KEPT = 1000  # at most this many raw per-call times in a record (`samples_ms`)


class RecordError(InputError):
    """A result file that is not a valid record."""


@dataclass
class Accuracy:
    """Outputs of the built artifact against the reference model on the same inputs."""

    passed: bool
    reference: str  # "torch" (the PyTorch model) or "onnxruntime-fp32" (the fp32 ONNX graph)
    max_abs: float | None  # worst over outputs (None: not comparable, e.g. a shape mismatch)
    median_rel: float | None  # worst over outputs
    cosine: float | None  # lowest over outputs
    tolerance: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # per output: name, stats, reason

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchRecord:
    model: str
    target: str
    precision: str
    batch: int
    machine: str
    status: str
    source_hash: str
    model_ref: str = ""
    device: str = ""  # the target's device kind: cpu, cuda, npu
    device_name: str = ""  # what that device is: "NVIDIA A10", a CPU model, "Ascend 310P3"
    reason: str = ""  # why unavailable / failed; empty when ok
    latency_ms: dict[str, float] | None = None  # LatencyStats.to_json()
    throughput_per_s: float | None = None  # samples per second at the median latency
    includes_transfers: bool | None = None
    accuracy: Accuracy | None = None
    flops_per_sample: float | None = None
    achieved_tflops: float | None = None
    peak_tflops: float | None = None
    utilisation: float | None = None  # achieved / peak, 0..1
    peak_source: str | None = None  # which entry of the peak table, or "estimate: ..."
    settings: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)
    bundle: str | None = None
    warnings: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    node: str = ""  # the Ray node id a campaign cell ran on (several can share a host); empty when local
    # what was built when the artifact was compiled apart from where it ran (or not run): machine,
    # node, seconds, main file and its bytes, layers, the precision check, the kept artifact
    build: dict[str, Any] = field(default_factory=dict)
    # the timed calls' own times in ms, in the order they ran: {"values": [...], "stride": k} keeps
    # every k-th call (k > 1 only past SAMPLES_KEPT calls); None when the timer gives only a summary
    samples_ms: dict[str, Any] | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    @property
    def model_id(self) -> str:
        """The model with its size (`mobilevit-s@test`). Records written before the size was part
        of `model` named a test-size example by its bare name; their `model_ref` still has it."""
        base, sep, size = self.model_ref.partition(SIZE_MARK)
        if sep and size and base == self.model and size != FULL_SIZE:
            return self.model_ref
        return self.model

    @property
    def key(self) -> tuple[str, str, str, int, str]:
        return (self.model_id, self.target, self.precision, self.batch, self.machine)

    @property
    def median_ms(self) -> float | None:
        return None if self.latency_ms is None else self.latency_ms["median"]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema": SCHEMA}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = value.to_json() if isinstance(value, Accuracy) else value
        return _finite(data)

    @classmethod
    def from_json(cls, data: Any, *, where: str = "record") -> BenchRecord:
        validate(data, where)
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if values.get("accuracy") is not None:
            values["accuracy"] = Accuracy(**{k: data["accuracy"][k] for k in _ACCURACY_FIELDS
                                             if k in data["accuracy"]})
        return cls(**values)


def kept_samples(samples: Iterable[float], limit: int = SAMPLES_KEPT) -> dict[str, Any] | None:
    """A record's `samples_ms`: every call's time (ms, to the nanosecond) when there are at most
    `limit`, else every k-th call in order, k the smallest stride that fits; None without samples."""
    values = list(samples)
    if not values:
        return None
    stride = max(1, math.ceil(len(values) / limit))
    return {"stride": stride, "values": [round(float(v), 6) for v in values[::stride]]}


def _finite(value: Any) -> Any:
    """NaN and infinities become null: strict JSON has no spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---- validation -------------------------------------------------------------------------------

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))

# field -> (accepted types, required)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "model": ((str,), True), "target": ((str,), True), "precision": ((str,), True),
    "batch": ((int,), True), "machine": ((str,), True), "status": ((str,), True),
    "source_hash": ((str,), True), "schema_version": ((int,), True),
    "model_ref": ((str,), False), "device": ((str,), False), "device_name": ((str,), False),
    "reason": ((str,), False), "latency_ms": ((dict, type(None)), False),
    "throughput_per_s": (_OPT_NUM, False), "includes_transfers": ((bool, type(None)), False),
    "accuracy": ((dict, type(None)), False), "flops_per_sample": (_OPT_NUM, False),
    "achieved_tflops": (_OPT_NUM, False), "peak_tflops": (_OPT_NUM, False),
    "utilisation": (_OPT_NUM, False), "peak_source": (_OPT_STR, False),
    "settings": ((dict,), False), "artifact": ((dict,), False), "bundle": (_OPT_STR, False),
    "warnings": ((list,), False), "environment": ((dict,), False), "created": ((str,), False),
    "node": ((str,), False), "build": ((dict,), False), "samples_ms": ((dict, type(None)), False),
}
_LATENCY_KEYS = ("count", "min", "max", "mean", "median", "p90", "p95", "p99", "std")
# null when the timer does not report them (ais_bench's console summary: min/max/mean/median/p99)
_OPTIONAL_LATENCY_KEYS = ("p90", "p95", "std")
_ACCURACY_FIELDS = ("passed", "reference", "max_abs", "median_rel", "cosine", "tolerance", "outputs")
_ACCURACY_TYPES: dict[str, tuple[type, ...]] = {
    "passed": (bool,), "reference": (str,), "max_abs": _OPT_NUM, "median_rel": _OPT_NUM,
    "cosine": _OPT_NUM,
    "tolerance": (dict,), "outputs": (list,)}


def _type_names(types: tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             dict: "an object", list: "a list", type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _fail(where: str, field_name: str, problem: str) -> RecordError:
    return RecordError(f"malformed result record: field '{field_name}' {problem}", where=where,
                       fix="rerun `vlc bench` for this cell, or remove the file from the results")


def _is(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int in Python; a record's integers and numbers must not be true/false
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def validate(data: Any, where: str) -> None:
    """Raise RecordError naming `where` and the first bad field; return None when valid."""
    if not isinstance(data, dict):
        raise RecordError(f"malformed result record: expected a JSON object, got {type(data).__name__}",
                          where=where, fix="pass files written by `vlc bench`")
    if data.get("schema") != SCHEMA:
        raise _fail(where, "schema", f"must be '{SCHEMA}', got {data.get('schema')!r}")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(where, "schema_version", f"must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise RecordError(f"result record has schema version {version}; this vlc reads up to "
                          f"{SCHEMA_VERSION}", where=where, fix="upgrade vlc to read it")
    if version < 1:
        raise _fail(where, "schema_version", f"must be at least 1, got {version}")
    for name, (types, required) in _FIELDS.items():
        if name not in data:
            if required:
                raise _fail(where, name, "is missing")
            continue
        if not _is(data[name], types):
            raise _fail(where, name, f"must be {_type_names(types)}, got {json.dumps(data[name])[:60]}")
    if unknown := sorted(set(data) - set(_FIELDS) - {"schema"}):
        raise _fail(where, unknown[0], "is not a field of this schema version")
    for name in ("model", "target", "precision", "machine", "source_hash"):
        if not data[name].strip():
            raise _fail(where, name, "is empty")
    if data["batch"] < 1:
        raise _fail(where, "batch", f"must be a positive integer, got {data['batch']}")
    if data["status"] not in STATUSES:
        raise _fail(where, "status", f"must be one of {', '.join(STATUSES)}, got {data['status']!r}")
    latency = data.get("latency_ms")
    if latency is not None:
        for key in _LATENCY_KEYS:
            if key in _OPTIONAL_LATENCY_KEYS and latency.get(key) is None:
                continue
            if not _is(latency.get(key), _NUM):
                raise _fail(where, f"latency_ms.{key}", f"must be a number, got {latency.get(key)!r}")
            if not math.isfinite(latency[key]):  # json.loads reads NaN and Infinity; vlc never writes them
                raise _fail(where, f"latency_ms.{key}", f"must be finite, got {latency[key]}")
        if latency["median"] <= 0:
            raise _fail(where, "latency_ms.median", f"must be positive, got {latency['median']}")
    accuracy = data.get("accuracy")
    if accuracy is not None:
        for key, types in _ACCURACY_TYPES.items():
            if key not in accuracy:
                if key in ("tolerance", "outputs"):
                    continue
                raise _fail(where, f"accuracy.{key}", "is missing")
            if not _is(accuracy[key], types):
                raise _fail(where, f"accuracy.{key}",
                            f"must be {_type_names(types)}, got {json.dumps(accuracy[key])[:60]}")
    if data["status"] == "ok":
        if latency is None:
            raise _fail(where, "latency_ms", "is required when status is 'ok'")
        if data.get("throughput_per_s") is None:
            raise _fail(where, "throughput_per_s", "is required when status is 'ok'")
    elif data["status"] in ("unavailable", "failed", "built") and not data.get("reason", "").strip():
        raise _fail(where, "reason", f"must say why when status is '{data['status']}'")
    if data["status"] == "built" and not data.get("build"):
        raise _fail(where, "build", "must say what was built when status is 'built'")
    samples = data.get("samples_ms")
    if samples is not None:
        values, stride = samples.get("values"), samples.get("stride")
        if not isinstance(values, list) or not all(_is(v, _NUM) and math.isfinite(v) and v >= 0 for v in values):
            raise _fail(where, "samples_ms.values", "must be a list of finite non-negative numbers")
        if not _is(stride, (int,)) or stride < 1:
            raise _fail(where, "samples_ms.stride", f"must be a positive integer, got {stride!r}")
    utilisation = data.get("utilisation")
    if utilisation is not None and utilisation < 0:
        raise _fail(where, "utilisation", f"must not be negative, got {utilisation}")


# ---- files ------------------------------------------------------------------------------------

def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", text).strip("._") or "_"


def record_path(results_dir: Path, record: BenchRecord) -> Path:
    return (Path(results_dir) / _safe(record.machine) / _safe(record.model)
            / f"{_safe(record.target)}-{_safe(record.precision)}-b{record.batch}{RECORD_SUFFIX}")


def write_record(results_dir: Path, record: BenchRecord) -> Path:
    """Write atomically (temporary file, then rename); the cell's earlier record is replaced."""
    validate(record.to_json(), where=f"record {record.key}")  # never write what we cannot read
    path = record_path(results_dir, record)
    make_dir(path.parent)  # below a file (--record afile/sub): one line, not NotADirectoryError
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record.to_json(), f, indent=2, sort_keys=False, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(path: Path) -> BenchRecord:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RecordError(f"cannot read result file: {exc.strerror or exc}", where=str(path),
                          fix="check the path and its permissions") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"result file is not valid JSON: {exc.msg} at line {exc.lineno}",
                          where=str(path), fix="rerun `vlc bench` for this cell, or remove the file") from None
    return BenchRecord.from_json(data, where=str(path))


def find_record_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their record files (recursively); files are taken as given."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob(f"*{RECORD_SUFFIX}") if q.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"results path {p} does not exist",
                             fix="pass result directories written by `vlc bench --results DIR`")
    return found


@dataclass
class LoadedRecords:
    records: list[BenchRecord]
    files: int
    replaced: list[str]  # notes on duplicates: the older record of a cell is dropped


def load_records(paths: Iterable[str | Path]) -> LoadedRecords:
    """Read and validate every record under `paths`; the newest record of each cell wins."""
    files = find_record_files(paths)
    best: dict[tuple[str, str, str, int, str], tuple[BenchRecord, Path]] = {}
    replaced: list[str] = []
    for path in files:
        record = read_record(path)
        previous = best.get(record.key)
        if previous is not None:
            older, newer = sorted([previous, (record, path)], key=lambda rp: rp[0].created)
            replaced.append(f"{older[1]} is older than {newer[1]} for the same cell; using the newer")
            best[record.key] = newer
        else:
            best[record.key] = (record, path)
    return LoadedRecords([rp[0] for rp in best.values()], len(files), replaced)
