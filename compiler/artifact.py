"""Artifacts: a directory with the compiled file(s) and manifest.json, written atomically.

A build happens in a sibling temporary directory; the manifest is written last and the
directory renamed into place, so a failed or interrupted build never leaves a directory
that looks valid. An existing artifact is reused when source hash, spec and vlc version match.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import vlc
from vlc.errors import InputError
from vlc.manifest import MANIFEST, MANIFEST_SCHEMA, Manifest, SourceInfo
from vlc.onnx_files import copy_onnx, external_data_locations, file_sha256, onnx_sha256
from vlc.outdir import claim_output_dir, clean_orphans, make_dir, make_temp_dir, output_lock, replace_dir, write_marker
from vlc.signature import Signature
from vlc.spec import TargetSpec

__all__ = ["MANIFEST", "MANIFEST_SCHEMA", "SOURCE_GRAPH", "Artifact", "BuildDir", "Manifest", "SourceInfo",
           "building", "cache_key", "files_damage", "finalize", "find_reusable", "graph_hash", "keep_source_graph"]


def graph_hash(onnx_path: Path) -> str:
    """Hash of an ONNX file and every external-data file it references (the source-graph identity)."""
    return onnx_sha256(Path(onnx_path))


def listed_files(root: Path, files: dict[str, str]) -> list[str]:
    """The manifest's files plus the external-data files of the ONNX graphs among them."""
    names = dict.fromkeys(files.values())
    for name in files.values():
        if name.lower().endswith(".onnx") and (root / name).is_file():
            try:
                locations = external_data_locations(root / name)
            except Exception:  # noqa: BLE001 - an unreadable graph fails its own hash check
                locations = []
            for location in locations:
                names.setdefault(str(PurePosixPath(name).parent / location))
    return [str(PurePosixPath(n)) for n in names]


def files_sha256(root: Path, files: dict[str, str]) -> dict[str, str]:
    """sha256 of every listed file that exists (a target may list a file it did not need to write)."""
    return {name: file_sha256(root / name) for name in listed_files(root, files) if (root / name).is_file()}


@dataclass
class Artifact:
    path: Path
    manifest: Manifest
    note: str | None = None  # why an existing artifact in this place was not reused (not stored)
    transient_of: Path | None = None  # the bare .onnx file a temporary artifact was built from (run/profile)

    @property
    def target(self) -> str:
        return self.manifest.target

    @property
    def spec(self) -> TargetSpec:
        return self.manifest.spec

    @property
    def signature(self) -> Signature:
        return self.manifest.signature

    def file(self, key: str = "main") -> Path:
        return self.path / self.manifest.files[key]

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        path = Path(path)
        manifest_path = path / MANIFEST
        if not path.exists():
            raise InputError(f"artifact directory {path} does not exist",
                             fix="build one with `vlc compile MODEL --target T -o DIR`")
        if not manifest_path.is_file():
            raise InputError(f"{path} is not a vlc artifact (no {MANIFEST})",
                             fix="pass the directory written by `vlc compile`")
        try:
            data = json.loads(manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read {manifest_path}: {exc}",
                             fix="rebuild the artifact with `vlc compile --force`") from None
        return cls(path, Manifest.from_json(data, where=str(manifest_path)))


@dataclass
class BuildDir:
    """A directory being built; `files` and `extra` end up in the manifest."""

    path: Path
    output: str = "vlc"  # the name of the directory it becomes (a failed build's log is named after it)
    files: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.path / "build.log"

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(text.rstrip("\n") + "\n")


def cache_key(source_hash: str, spec: TargetSpec) -> dict[str, str]:
    return {"source_hash": source_hash, "spec_key": spec.key(), "vlc_version": vlc.__version__}


def find_reusable(out_dir: Path, key: dict[str, str]) -> tuple[Artifact | None, str | None]:
    """(the artifact, None) when it can be reused, else (None, why not); (None, None) when there is none."""
    out_dir = Path(out_dir)
    if not (out_dir / MANIFEST).is_file():
        return None, None
    rebuilt = f"{out_dir} is rebuilt"
    try:
        artifact = Artifact.load(out_dir)
    except InputError as exc:
        return None, f"{rebuilt}: its manifest is unusable ({exc.what})"
    cache = artifact.manifest.cache
    if changed := [k for k, v in key.items() if cache.get(k) != v]:
        return None, f"{rebuilt}: {', '.join(_KEY_WORDS.get(k, k) for k in changed)} changed"
    damage = files_damage(artifact)
    return (artifact, None) if damage is None else (None, f"{rebuilt}: {damage}")


_KEY_WORDS = {"source_hash": "the source graph", "spec_key": "the target options", "vlc_version": "vlc's version"}


def files_damage(artifact: Artifact) -> str | None:
    """What is wrong with the artifact's files (missing, or not the bytes it was built with), or None."""
    recorded = artifact.manifest.files_sha256
    if not isinstance(recorded, dict):
        return "its manifest records no file hashes"
    for name, sha in recorded.items():
        path = artifact.path / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != sha:
            return f"{name} was modified after the build"
    return None


SOURCE_GRAPH = "source.onnx"


def keep_source_graph(build: BuildDir, source_onnx: Path, source_hash: str) -> str:
    """The artifact's own copy of its fp32 source graph (for `vlc compare --reference onnx`), by file name.

    A graph the target wrote unchanged (onnxruntime fp32) serves as it is; otherwise source.onnx is
    copied in, so the artifact never points into the front-end cache and can be moved or copied.
    """
    for name in list(build.files.values()):
        if name.lower().endswith(".onnx") and (build.path / name).is_file() \
                and onnx_sha256(build.path / name) == source_hash:
            return name
    copy_onnx(Path(source_onnx), build.path / SOURCE_GRAPH)
    build.files["source_graph"] = SOURCE_GRAPH
    return SOURCE_GRAPH


FAILED_LOG_HEADER = "# vlc failed-build log"  # the first line of every such file: vlc may replace it


def keep_failed_log(build: BuildDir, extra: str = "") -> Path:
    """Keep a failed build's log (its build.log, then `extra`: e.g. the vendor compiler's output)
    beside the output as `NAME.failed-build.log`, since the build directory is removed on failure.
    A file of that name that vlc did not write is left alone: the log goes to the first free
    `NAME.failed-build.N.log`."""
    name = build.output
    text = build.log_path.read_text(errors="replace") if build.log_path.exists() else ""
    body = f"{FAILED_LOG_HEADER} of {name}; a later failed build replaces it\n{text}{extra}"
    for k in range(1000):
        path = build.path.parent / (f"{name}.failed-build.log" if k == 0 else f"{name}.failed-build.{k}.log")
        if path.is_symlink() or (path.exists() and not _written_by_vlc(path)):
            continue
        scratch = make_temp_dir(build.path.parent, f".{name}.failed-log-")
        try:
            (scratch / "log").write_text(body)
            os.replace(scratch / "log", path)  # whole or not at all
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return path
    raise InputError(f"no free name for the failed-build log of {name} in {build.path.parent}",
                     fix="remove old NAME.failed-build.N.log files")


def _written_by_vlc(path: Path) -> bool:
    try:
        with open(path, errors="replace") as f:
            return f.readline().startswith(FAILED_LOG_HEADER)
    except OSError:
        return False


@contextmanager
def building(out_dir: Path) -> Iterator[BuildDir]:
    """Yield a temporary build directory; on success the caller's manifest makes it final.

    The output is claimed first (a directory vlc did not write is refused, never replaced). The
    build happens beside the real directory (a symlinked out_dir keeps its link) under a lock, so
    a second build into the same place waits for this one; orphans of killed builds go first."""
    real = claim_output_dir(out_dir, "artifact")
    make_dir(real.parent)
    with output_lock(real):
        clean_orphans(real.parent, real.name, locked=True, mkdtemp_names=False)
        tmp = make_temp_dir(real.parent, f".{real.name}.building-")
        try:
            yield BuildDir(tmp, output=real.name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def finalize(build: BuildDir, out_dir: Path, manifest: Manifest) -> Artifact:
    """Write the manifest last (with what the build recorded: files and their sha256, the log,
    tool versions, the target's extra), then swap the build directory into place."""
    manifest.files = dict(build.files)
    manifest.files_sha256 = files_sha256(build.path, build.files)  # checked on reuse
    manifest.build_log = build.log_path.name if build.log_path.exists() else None
    manifest.tool_versions = dict(build.tool_versions)
    manifest.extra = build.extra
    manifest.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    Manifest.from_json(manifest.to_json(), where="the manifest being written")  # what load will check
    manifest_tmp = build.path / (MANIFEST + ".tmp")
    manifest_tmp.write_text(manifest.dumps())
    os.replace(manifest_tmp, build.path / MANIFEST)
    out_dir = Path(out_dir)
    write_marker(build.path, "artifact")
    # checked again just before the swap: what is there now may not be what was there at the start
    replace_dir(build.path, claim_output_dir(out_dir, "artifact"))
    return Artifact(out_dir, manifest)
