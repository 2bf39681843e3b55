"""Artifacts: a directory with the compiled file(s) and manifest.json, written atomically.

A build happens in a sibling temporary directory; the manifest is written last and the
directory renamed into place, so a failed or interrupted build never leaves a directory
that looks valid. An existing artifact is reused when source hash, spec and vlc version match.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import vlc
from vlc.errors import InputError
from vlc.signature import Signature
from vlc.spec import TargetSpec

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def graph_hash(onnx_path: Path) -> str:
    """Hash of an ONNX file and its external-data files (the source-graph identity)."""
    digest = hashlib.sha256(file_sha256(onnx_path).encode())
    for sidecar in sorted(onnx_path.parent.glob(onnx_path.name + ".data*")):
        digest.update(file_sha256(sidecar).encode())
    return digest.hexdigest()


@dataclass
class Artifact:
    path: Path
    manifest: dict[str, Any]

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def spec(self) -> TargetSpec:
        return TargetSpec.from_json(self.manifest["spec"])

    @property
    def signature(self) -> Signature:
        return Signature.from_json(self.manifest["signature"])

    def file(self, key: str = "main") -> Path:
        return self.path / self.manifest["files"][key]

    @classmethod
    def load(cls, path: str | Path) -> "Artifact":
        path = Path(path)
        manifest_path = path / MANIFEST
        if not path.exists():
            raise InputError(f"artifact directory {path} does not exist",
                             fix="build one with `vlc compile MODEL --target T -o DIR`")
        if not manifest_path.is_file():
            raise InputError(f"{path} is not a vlc artifact (no {MANIFEST})",
                             fix="pass the directory written by `vlc compile`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read {manifest_path}: {exc}",
                             fix="rebuild the artifact with `vlc compile --force`") from None
        if manifest.get("schema") != MANIFEST_SCHEMA:
            raise InputError(f"{manifest_path} has manifest schema {manifest.get('schema')}, "
                             f"this vlc reads {MANIFEST_SCHEMA}", fix="rebuild the artifact")
        return cls(path, manifest)


@dataclass
class BuildDir:
    """A directory being built; `files` and `extra` end up in the manifest."""

    path: Path
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


def find_reusable(out_dir: Path, key: dict[str, str]) -> Artifact | None:
    try:
        artifact = Artifact.load(out_dir)
    except InputError:
        return None
    if all(artifact.manifest.get("cache", {}).get(k) == v for k, v in key.items()):
        return artifact
    return None


@contextmanager
def building(out_dir: Path) -> Iterator[BuildDir]:
    """Yield a temporary build directory; on success the caller's manifest makes it final."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        yield BuildDir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def finalize(build: BuildDir, out_dir: Path, manifest: dict[str, Any]) -> Artifact:
    """Write the manifest last, then swap the build directory into place."""
    manifest = {"schema": MANIFEST_SCHEMA, **manifest,
                "files": build.files, "build_log": build.log_path.name if build.log_path.exists() else None,
                "tool_versions": build.tool_versions, "extra": build.extra,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    manifest_tmp = build.path / (MANIFEST + ".tmp")
    manifest_tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(manifest_tmp, build.path / MANIFEST)
    out_dir = Path(out_dir)
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(build.path, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(build.path, out_dir)
    return Artifact(out_dir, manifest)
