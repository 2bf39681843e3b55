"""Bench records (vlc.records) from a bundle's imported results, so `vlc report` merges them.

One record per batch that profile.sh timed: status ok, device "npu", the chip's name from
the bundle's SoC ("Ascend310P3" -> "Ascend 310P3", the form of the device peak table and of
`npu-smi info`), accuracy against the ONNX Runtime outputs of the unpatched graph, latency
from ais_bench's NPU compute time, and FLOPs counted on the bundle's own ONNX graph. When
`vlc bench --emit` wrote the bundle, its cell file gives the bench's model name and target
label, so the imported records line up with the bench's other columns.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import vlc
from vlc.errors import InputError
from vlc.measure import BUNDLE_CELL, REFERENCE_ONNX, accuracy_of, flop_count, make_record
from vlc.records import BenchRecord
from vlc.targets.ascend.bundle import HOST_FILE, OS_FILE, BundleResults

DEVICE = "npu"
REFERENCE = REFERENCE_ONNX  # the bundle's "original" outputs: the unpatched graph in ONNX Runtime


def soc_device_name(soc_version: str) -> str:
    """ATC's --soc_version to the chip name `npu-smi info` and the peak table use."""
    return re.sub(r"^Ascend(?=\d)", "Ascend ", soc_version)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def recorded_machine(results: BundleResults) -> str | None:
    """The host name profile.sh wrote on the machine that ran it."""
    return _read(results.path / "results" / "profile" / HOST_FILE)


def _bench_cell(root: Path) -> dict[str, Any]:
    text = _read(root / BUNDLE_CELL)
    return json.loads(text) if text else {}


def _model_name(meta: dict[str, Any]) -> str:
    if meta.get("model"):
        return str(meta["model"])
    ref = str(meta["source"]["ref"])  # bundles written before the model name was kept
    return Path(ref).stem if ref.lower().endswith(".onnx") else ref.rpartition(":")[2]


def _build_onnx(results: BundleResults, batch: int) -> Path | None:
    for build in results.meta["builds"]:
        if batch in build["batches"]:
            return results.path / build["onnx"]
    return None


def bench_records(results: BundleResults, machine: str | None = None) -> list[BenchRecord]:
    """Records of every timed batch (none when profile.sh has not run)."""
    meta = results.meta
    cell = _bench_cell(results.path)
    machine = machine or recorded_machine(results)
    if not machine:
        raise InputError(f"{results.path} does not say which machine ran it (no results/profile/{HOST_FILE})",
                         fix="name it with --machine NAME")
    device_name = soc_device_name(meta["soc_version"])
    env = {"host": recorded_machine(results) or machine,
           "os": _read(results.path / "results" / "profile" / OS_FILE) or "unknown",
           "npus": [{"name": device_name}], "vlc_version": meta.get("vlc_version", vlc.__version__),
           "imported_from": str(results.path)}
    reports = results.compare()
    records = []
    for batch, profile in sorted(results.profiles.items()):
        report = reports.get(batch)
        settings = {
            "timing_source": f"imported from the Ascend bundle {results.path}: ais_bench NPU compute time "
                             f"of its profile.sh ({meta['profile']['loop']} loops after "
                             f"{meta['profile']['warmup']} warm-up runs)",
            "warmup": meta["profile"]["warmup"], "iterations": meta["profile"]["loop"],
            "graph": cell.get("graph", "normalized"), "extra": dict(profile.extra)}
        record = make_record(
            model=cell.get("model") or _model_name(meta), target=cell.get("target") or meta["target"],
            precision=meta["precision"], batch=batch, machine=machine, status="ok",
            source_hash=meta["source"]["hash"], model_ref=meta["source"]["ref"], device=DEVICE,
            device_name=device_name, accuracy=accuracy_of(report, REFERENCE) if report else None,
            settings=settings, bundle=str(results.path), env=env,
            artifact={"path": str(results.path), "soc_version": meta["soc_version"], "cann": meta["cann"],
                      "precision_flag": meta["precision_flag"], "spec": meta["spec"],
                      "builds": [b["name"] for b in meta["builds"] if batch in b["batches"]]},
            result=profile, flops=flop_count(_build_onnx(results, batch), batch))
        if report is None:
            record.warnings.append(f"no outputs of run.sh for batch {batch}: accuracy unknown")
        records.append(record)
    return records
