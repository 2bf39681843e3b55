"""Artifacts built on one node and timed on another (or on none): what travels and what is kept.

A TensorRT-RTX engine for an A10 builds on any machine with the toolchain; it is timed only
where an A10 is. The build node packs the artifact directory (manifest, engine, graphs, build
log) into one tar (`pack`), the driver keeps a copy in the results folder (`keep`) and sends
it to a node with the hardware, which unpacks it (`unpack`) and checks every file against the
manifest's hashes before timing it. `build_facts` is what a record says about the build:
where and how long, the main file and its size, the layers the target reported, the precision
check of the converted graph, the tool versions, and where the artifact is kept.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

from vlc.artifact import Artifact, files_damage
from vlc.outdir import claim_output_dir, make_dir, make_temp_dir, replace_dir, write_marker

KEPT_SUFFIX = ".artifact"  # results/<machine>/<model>/<target>-<precision>.artifact/


def pack(path: Path) -> bytes:
    """The artifact directory as an uncompressed tar (engines barely compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in sorted(Path(path).rglob("*")):
            if entry.is_file() and not entry.is_symlink():
                tar.add(entry, arcname=str(entry.relative_to(path)), recursive=False)
    return buffer.getvalue()


def unpack(data: bytes, dest: Path) -> Artifact:
    """Write a packed artifact at `dest` (vlc's own directory: replaced whole, atomically) and
    load it; a file that is not the bytes the build wrote is an error, never timed."""
    real = claim_output_dir(dest, "artifact")
    make_dir(real.parent)
    tmp = make_temp_dir(real.parent, f".{real.name}.writing-")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(tmp, filter="data")  # no absolute paths, links out or devices
        write_marker(tmp, "artifact")
        replace_dir(tmp, real)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    artifact = Artifact.load(dest)
    if (damage := files_damage(artifact)) is not None:
        raise ValueError(f"the artifact sent from its build node is damaged: {damage}")
    return artifact


def kept_path(results: Path, machine_dir: str, model_dir: str, label_dir: str, precision: str) -> Path:
    return Path(results) / machine_dir / model_dir / f"{label_dir}-{precision}{KEPT_SUFFIX}"


def keep(data: bytes, dest: Path) -> Path:
    """The driver's copy of a packed artifact at `dest` (in the results folder)."""
    return unpack(data, dest).path


def _layers(extra: dict[str, Any]) -> tuple[int | None, str | None]:
    """A layer count a target reported in its manifest section (`extra.<target>.layers.count`)."""
    for section in extra.values():
        layers = section.get("layers") if isinstance(section, dict) else None
        if isinstance(layers, dict) and isinstance(layers.get("count"), int):
            return layers["count"], layers.get("source")
    return None, None


def _precision_check(extra: dict[str, Any]) -> dict[str, Any] | None:
    """The converted graph's check against the fp32 graph (fp16/bf16/int8 builds), in short."""
    report = extra.get("precision")
    if not isinstance(report, dict):
        return None
    accuracy: dict[str, Any] = report["accuracy"] if isinstance(report.get("accuracy"), dict) else {}
    outputs = [o for o in accuracy.get("outputs", []) if isinstance(o, dict)]
    cosines = [o["cosine"] for o in outputs if isinstance(o.get("cosine"), (int, float))]
    max_abs = [o["max_abs"] for o in outputs if isinstance(o.get("max_abs"), (int, float))]
    check: dict[str, Any] = report["check"] if isinstance(report.get("check"), dict) else {}
    passed = report.get("passed", accuracy.get("passed"))
    return {"precision": report.get("precision"), "passed": passed if isinstance(passed, bool) else None,
            "min_cosine": min(cosines) if cosines else None, "max_abs": max(max_abs) if max_abs else None,
            "tolerance": accuracy.get("tolerance") or {}, "inputs": check.get("inputs"),
            "runtime": check.get("runtime"), "reference": check.get("reference")}


def build_facts(artifact: Artifact, *, machine: str, node: str, host: str) -> dict[str, Any]:
    """What a record says about an artifact built here (the `build` field)."""
    manifest = artifact.manifest
    files = manifest.files
    sizes = {name: (artifact.path / name).stat().st_size for name in dict.fromkeys(files.values())
             if (artifact.path / name).is_file()}
    extra = manifest.extra
    layers, layers_source = _layers(extra)
    main = files.get("main")
    return {"machine": machine, "node": node, "host": host, "target": manifest.target,
            "preset": manifest.preset, "seconds": manifest.build_seconds,
            "main_file": main, "main_bytes": sizes.get(main) if main else None,
            "total_bytes": sum(sizes.values()), "layers": layers, "layers_source": layers_source,
            "precision_check": _precision_check(extra), "tool_versions": dict(manifest.tool_versions),
            "created": manifest.created, "artifact": str(Path(artifact.path).resolve())}
