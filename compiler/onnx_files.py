"""An ONNX model on disk is a file plus the external-data files it names: list, check, hash and copy them.

External data is referenced by a location relative to the .onnx file. Exporters usually write
`<name>.onnx.data`, but any relative path is valid (`weights/ext.bin`), so every caller asks here
instead of guessing file names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from vlc.errors import InputError


def _tensors_of_graph(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers, sparse initializers and node attributes, recursively."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors_of_graph(attr.g)
            for sub in attr.graphs:
                yield from _tensors_of_graph(sub)


def _tensors(proto: Any) -> Iterator[Any]:
    yield from _tensors_of_graph(proto.graph)
    for function in proto.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors


def external_data_locations(onnx_path: Path) -> list[str]:
    """The locations (relative to the .onnx file) of every external-data file the model references."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    locations: set[str] = set()
    for tensor in _tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(locations)


def external_data_files(onnx_path: Path) -> list[Path]:
    """The external-data files of an ONNX model; one clear line when one of them is missing."""
    return [path for _, path in _external_data(Path(onnx_path))]


def _external_data(onnx_path: Path) -> list[tuple[str, Path]]:
    """(location, path) of each external-data file, checked to exist."""
    files = []
    for location in external_data_locations(onnx_path):
        path = onnx_path.parent / location
        if not path.is_file():
            raise InputError(f"external data file {path} is missing",
                             where=str(onnx_path),
                             fix="keep the .onnx file together with the data files it references")
        files.append((location, path))
    return files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_sha256(onnx_path: Path) -> str:
    """One hash over the ONNX bytes and each external-data file (with its location: moving data matters)."""
    onnx_path = Path(onnx_path)
    digest = hashlib.sha256(file_sha256(onnx_path).encode())
    for location, path in _external_data(onnx_path):
        digest.update(location.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def _safe_location(location: str, onnx_path: Path) -> PurePosixPath:
    """A location copied into another directory must stay inside it."""
    rel = PurePosixPath(location.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise InputError(f"{onnx_path} references external data at '{location}', outside its directory",
                         where=str(onnx_path),
                         fix="keep the data files in the model's directory (or below it) and re-save the model")
    return rel


def copy_onnx(src: Path, dst: Path, *, keep_locations: bool = False) -> list[str]:
    """Copy an ONNX model to `dst` with all its external data; returns the copied files relative to dst's folder.

    Data named after the model (`src.onnx.data`) is renamed after `dst`, and data at other locations
    goes below `dst.onnx.data/`, so a copy only writes files named after its own output: two models
    copied into one folder do not share a data file, and a user's file beside `dst` is never
    overwritten. With `keep_locations` (a fresh directory of vlc's own) every location stays as it is.
    The .onnx file is written last and atomically: a reader never sees a graph whose data is not there yet.
    """
    src, dst = Path(src), Path(dst)
    renamed: dict[str, str] = {}
    for location, path in _external_data(src):
        rel = _safe_location(location, src)
        if keep_locations:
            new = str(rel)
        elif location.startswith(src.name):
            new = dst.name + location[len(src.name):]
        else:
            new = f"{dst.name}.data/{rel}"
        renamed[location] = new
        target = dst.parent / new
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if any(old != new for old, new in renamed.items()):
            _save_relocated(src, tmp, renamed)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return [dst.name, *renamed.values()]


def _save_relocated(src: Path, dst: Path, renamed: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(src), load_external_data=False)
    for tensor in _tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value in renamed:
                entry.value = renamed[entry.value]
    onnx.save(proto, str(dst))
