"""An artifact's manifest.json as a typed record: what was built, from what, with which tools.

Every artifact has the same fields (target, precision, spec, signature, source, files and their
sha256, build seconds, tool versions); what only one target knows goes into `extra`, which the
target reads back itself. The JSON is checked on load, so a corrupt or foreign manifest is one
error line, and the files it lists must lie inside the artifact (relative paths, no `..`), so an
artifact can be copied or moved as a directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from vlc.errors import InputError
from vlc.model import InputSpec
from vlc.signature import Signature
from vlc.spec import TargetSpec

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1


@dataclass(frozen=True)
class SourceInfo:
    """What the artifact was compiled from: the model ref the user gave, the artifact's own copy
    of the fp32 source graph (a file name inside the artifact), its hash and the input specs."""

    ref: str = ""
    onnx: str | None = None
    hash: str | None = None
    weights: str | None = None
    input_specs: tuple[InputSpec, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ref": self.ref, "onnx": self.onnx}
        if self.hash is not None:
            data["hash"] = self.hash
        data["weights"] = self.weights
        data["input_specs"] = [s.to_json() for s in self.input_specs]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceInfo:
        return cls(ref=str(data.get("ref") or ""), onnx=data.get("onnx"), hash=data.get("hash"),
                   weights=data.get("weights"),
                   input_specs=tuple(InputSpec.from_json(s) for s in data.get("input_specs") or ()))


@dataclass
class Manifest:
    target: str
    precision: str
    spec: TargetSpec
    signature: Signature
    source: SourceInfo
    files: dict[str, str]  # role ("main", "source_graph", ...) -> file name inside the artifact
    preset: str | None = None
    batch_range: list[int] | None = None  # [lo, hi]; None: any batch
    files_sha256: dict[str, str] | None = None  # file name -> sha256, checked before reuse (None: a bundle)
    cache: dict[str, str] = field(default_factory=dict)  # what decides reuse (source hash, spec key, vlc)
    build_seconds: float | None = None
    build_log: str | None = None
    tool_versions: dict[str, str] = field(default_factory=dict)
    vlc_version: str = ""
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # the target's own facts, read by the target
    schema: int = MANIFEST_SCHEMA

    @property
    def is_bundle(self) -> bool:
        """A deploy bundle: built and run on another machine, nothing runs here."""
        return bool(self.extra.get("bundle"))

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "target": self.target, "preset": self.preset, "precision": self.precision,
                "spec": self.spec.to_json(), "signature": self.signature.to_json(),
                "batch_range": self.batch_range, "source": self.source.to_json(), "cache": self.cache,
                "vlc_version": self.vlc_version, "build_seconds": self.build_seconds, "files": self.files,
                "files_sha256": self.files_sha256, "build_log": self.build_log,
                "tool_versions": self.tool_versions, "extra": self.extra, "created": self.created}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False, default=str) + "\n"

    @classmethod
    def from_json(cls, data: Any, *, where: str = MANIFEST) -> Manifest:
        """A manifest from its JSON, checked: one InputError naming the first bad field."""
        fix = "rebuild the artifact with `vlc compile --force`"
        if not isinstance(data, dict):
            raise InputError(f"{where} is not a JSON object", fix=fix)
        if data.get("schema") != MANIFEST_SCHEMA:
            raise InputError(f"{where} has manifest schema {data.get('schema')}, this vlc reads {MANIFEST_SCHEMA}",
                             fix="rebuild the artifact")

        def bad(name: str, what: str) -> InputError:
            return InputError(f"{where}: field '{name}' {what}", fix=fix)

        for name, kind in (("target", str), ("precision", str), ("spec", dict), ("signature", dict),
                           ("files", dict)):
            if not isinstance(data.get(name), kind):
                raise bad(name, "is missing" if name not in data else f"is not a {kind.__name__}")
        for name in ("source", "cache", "tool_versions", "extra", "files_sha256"):
            if data.get(name) is not None and not isinstance(data[name], dict):
                raise bad(name, "is not an object")
        batch_range = data.get("batch_range")
        if batch_range is not None and not (isinstance(batch_range, list) and len(batch_range) == 2
                                            and all(isinstance(b, int) and b >= 1 for b in batch_range)
                                            and batch_range[0] <= batch_range[1]):
            raise bad("batch_range", f"is not [min, max] batch sizes: {batch_range!r}")
        for role, name in data["files"].items():
            if not isinstance(name, str) or not inside(name):
                raise bad("files", f"lists {role} = {name!r}, not a file inside the artifact")
        try:
            spec = TargetSpec.from_json(data["spec"])
            signature = Signature.from_json(data["signature"])
            source = SourceInfo.from_json(data.get("source") or {})
        except InputError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: cannot read spec, signature or source ({type(exc).__name__}: {exc})",
                             fix=fix) from None
        return cls(target=data["target"], precision=data["precision"], spec=spec, signature=signature,
                   source=source, files=dict(data["files"]), preset=data.get("preset"),
                   batch_range=list(batch_range) if batch_range else None,
                   files_sha256=data.get("files_sha256"), cache=dict(data.get("cache") or {}),
                   build_seconds=data.get("build_seconds"), build_log=data.get("build_log"),
                   tool_versions=dict(data.get("tool_versions") or {}), vlc_version=str(data.get("vlc_version", "")),
                   created=str(data.get("created", "")), extra=dict(data.get("extra") or {}),
                   schema=data["schema"])

    # ---- the JSON's keys, read-only, for plugins and tests written against the dict manifest ----
    def __getitem__(self, key: str) -> Any:
        data = self.to_json()
        if key == "extra":
            return self.extra  # the target's own section, the same object (targets fill it while building)
        return data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self.to_json() else default

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())


def inside(name: str) -> bool:
    """A relative path that stays inside the artifact directory."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and not name.startswith("\\")
