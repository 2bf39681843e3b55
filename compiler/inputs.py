"""Model inputs from files or generators, and outputs to files.

Input files: `.npy` (the input's name is the file stem, or `name=path.npy`), `.npz` (keys are
input names), `.pb` (an ONNX TensorProto; its name field, else the file stem), Polygraphy's input
`.json` (given as a file), and directories of .npy/.npz/.pb files. Names are checked against the
signature here; dtypes and shapes are checked by the target (Signature.validate_inputs) so every
path reports them alike.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vlc.errors import InputError, first_line
from vlc.model import InputSpec, generate_from_specs, specs_from_signature
from vlc.signature import Signature

INPUT_SUFFIXES = (".npy", ".npz", ".pb")


def _check_npy_size(path: Path) -> None:
    """A truncated .npy whose header claims a huge shape would make numpy allocate it all before
    noticing (a MemoryError of terabytes); compare the header with the file's size first."""
    with open(path, "rb") as f:
        _check_npy_header(f, os.fstat(f.fileno()).st_size, path)


def _check_npy_header(f: BinaryIO, total_bytes: int, path: Path) -> None:
    """Refuse an .npy stream whose header claims more data than its `total_bytes` hold."""
    start = f.tell()
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        f.seek(start)
        return  # a newer header: numpy checks it itself
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read_header(f)
    data_bytes = total_bytes - f.tell()
    f.seek(start)
    if dtype.hasobject:
        return  # refused by allow_pickle=False with its own message
    needed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if needed > data_bytes:
        raise InputError(f"file {path} is truncated: its header says {dtype} {list(shape)} "
                         f"({needed} bytes), the file holds {data_bytes} bytes",
                         fix="write the input again with numpy.save")


def _read_npy(path: Path) -> np.ndarray:
    try:
        _check_npy_size(path)
        return np.load(path, allow_pickle=False)
    except PermissionError:
        raise InputError(f"cannot read file {path}: permission denied",
                         fix="check the file's permissions") from None
    except MemoryError:
        raise InputError(f"file {path} is too large to load into memory", fix="use smaller inputs") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read file {path}: not a valid .npy array ({first_line(exc, limit=200)})",
                         fix="write inputs with numpy.save") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except PermissionError:
        raise InputError(f"cannot read file {path}: permission denied",
                         fix="check the file's permissions") from None
    except MemoryError:
        raise InputError(f"an array in {path} is too large to load into memory (or its header is corrupt)",
                         fix="write inputs with numpy.savez") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read file {path}: not a valid .npz archive ({first_line(exc, limit=200)})",
                         fix="write inputs with numpy.savez") from None


def _read_pb(path: Path) -> tuple[str, np.ndarray]:
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        tensor = onnx.TensorProto()
        tensor.ParseFromString(path.read_bytes())
        return tensor.name, numpy_helper.to_array(tensor)
    except PermissionError:
        raise InputError(f"cannot read file {path}: permission denied",
                         fix="check the file's permissions") from None
    except (OSError, DecodeError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read file {path}: not a serialized ONNX TensorProto ({first_line(exc, limit=200)})",
                         fix="use .npy, .npz, or .pb files written by onnx.numpy_helper.from_array") from None


# Polygraphy's JSON (polygraphy.json: `polygraphy run --save-inputs`, `polygraphy data`): a list of
# feed dicts {input name: array}, each array {"array": base64 of its .npy bytes, "polygraphy_class":
# "ndarray"} (older files: {"__polygraphy_encoded_ndarray": <marker>, "array": ...}).
# Read and written here without importing Polygraphy, which only the TensorRT extras install.
_PG_CLASS, _PG_LEGACY = "polygraphy_class", "__polygraphy_encoded_"
_PG_FIX = "write inputs with `polygraphy run --save-inputs FILE.json`, vlc --save-inputs, or as .npy/.npz"
_log = logging.getLogger("vlc.inputs")


def _pg_type(value: Any) -> str | None:
    """The Polygraphy type an encoded JSON object stands for ('ndarray', 'Tensor', ...), or None."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get(_PG_CLASS), str):
        return value[_PG_CLASS]
    legacy = [k[len(_PG_LEGACY):] for k in value if isinstance(k, str) and k.startswith(_PG_LEGACY)]
    return legacy[0] if legacy else None


def _pg_array(value: Any, name: str, path: Path) -> np.ndarray:
    kind = _pg_type(value)
    if kind != "ndarray" or not isinstance(value.get("array"), str):
        what = f"a Polygraphy {kind}" if kind else f"a JSON {type(value).__name__}"
        raise InputError(f"input '{name}' in {path} is {what}, not an encoded NumPy array",
                         fix=_PG_FIX + (" (save torch tensors as NumPy arrays)" if kind == "Tensor" else ""))
    try:
        data = base64.b64decode(value["array"].encode(), validate=True)
    except (binascii.Error, ValueError):
        data = value["array"].encode("latin-1", errors="replace")  # Polygraphy's oldest encoding
    try:
        stream = io.BytesIO(data)
        _check_npy_header(stream, len(data), path)
        loaded = np.load(stream, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):  # older Polygraphy wrapped each array in an .npz
            with loaded:
                arrays = [loaded[k] for k in loaded.files]
            if not arrays:
                raise ValueError("empty archive")
            loaded = arrays[0]
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"input '{name}' in {path} is not a valid encoded array ({first_line(exc, limit=200)})",
                         fix=_PG_FIX) from None
    return loaded


def _read_json(path: Path) -> dict[str, np.ndarray]:
    """The feed dict of a Polygraphy input file; of several iterations, the first (logged)."""
    try:
        data = json.loads(path.read_text())
    except PermissionError:
        raise InputError(f"cannot read file {path}: permission denied", fix="check the file's permissions") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read file {path}: not JSON ({first_line(exc, limit=200)})", fix=_PG_FIX) from None
    feeds = data if isinstance(data, list) else [data]
    if not feeds or not all(isinstance(f, dict) and _pg_type(f) is None for f in feeds):
        raise InputError(f"{path} is not a Polygraphy input file: expected a list of feed dicts "
                         "{input name: encoded array}", fix=_PG_FIX)
    if len(feeds) > 1:
        _log.warning("%s holds %d iterations of inputs; using the first", path, len(feeds))
    return {str(name): _pg_array(value, str(name), path) for name, value in feeds[0].items()}


def polygraphy_json(feeds: Mapping[str, np.ndarray]) -> str:
    """One feed dict as Polygraphy input JSON (`polygraphy run --load-inputs FILE` reads it)."""
    def encode(array: np.ndarray) -> dict[str, str]:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        return {"array": base64.b64encode(buffer.getvalue()).decode(), _PG_CLASS: "ndarray"}

    return json.dumps([{name: encode(array) for name, array in feeds.items()}], indent=4) + "\n"


def _read_file(path: Path, name: str | None) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return {name or path.stem: _read_npy(path)}
    if suffix == ".npz":
        arrays = _read_npz(path)
        if name is not None:
            if len(arrays) != 1:
                raise InputError(f"{name}={path} names one input but the archive holds {len(arrays)}",
                                 fix="pass the .npz without a name; its keys are the input names")
            return {name: next(iter(arrays.values()))}
        return arrays
    if suffix == ".pb":
        stored, array = _read_pb(path)
        return {name or stored or path.stem: array}
    if suffix == ".json":
        if name is not None:
            raise InputError(f"{name}={path} names one input but a Polygraphy JSON file names its own",
                             fix="pass the .json without a name")
        return _read_json(path)
    raise InputError(f"input file {path} has an unknown type '{path.suffix}'",
                     fix="use .npy (name from the file stem or name=file.npy), .npz, .pb, Polygraphy .json, "
                         "or a directory")


def load_inputs(paths: Sequence[str | Path], signature: Signature) -> dict[str, np.ndarray]:
    """Read input arrays from files; every signature input must be given exactly once."""
    feeds, origin = _load_named(paths, signature.input_names, what="input")
    if missing := [k for k in signature.input_names if k not in feeds]:
        raise InputError(f"no file for input(s) {', '.join(missing)}",
                         fix=f"the model takes: {'; '.join(t.describe() for t in signature.inputs)}")
    for sig in signature.inputs:  # batch 0 is refused here as --batch 0 is
        array = feeds[sig.name]
        if sig.shape and not isinstance(sig.shape[0], int) and array.ndim and array.shape[0] == 0:
            raise InputError(f"input '{sig.name}' has batch 0 (shape {list(array.shape)})", where=origin[sig.name],
                             fix="batch sizes must be >= 1: give at least one sample")
    return feeds


def load_arrays(paths: Sequence[str | Path], known: Sequence[str], *, what: str = "input"
                ) -> dict[str, np.ndarray]:
    """Named arrays from .npy/.npz/.pb files and directories; names must be in `known`."""
    return _load_named(paths, known, what=what)[0]


def _load_named(paths: Sequence[str | Path], known: Sequence[str], *, what: str
                ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays by name and the file each came from; every name once, all in `known`."""
    feeds: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    for item in paths:
        text = str(item)
        name: str | None = None
        if "=" in text and not Path(text).exists():
            name, _, text = text.partition("=")
        path = Path(text)
        if not path.exists():
            raise InputError(f"{what} file {path} does not exist", fix="check the path")
        if path.is_dir():
            if name is not None:
                raise InputError(f"{name}={path} names a directory", fix="pass the directory without a name")
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in INPUT_SUFFIXES and p.is_file())
            if not files:
                raise InputError(f"{what} directory {path} holds no .npy, .npz or .pb files",
                                 fix=f"save one .npy per {what}, named after the {what}")
            arrays: dict[str, tuple[np.ndarray, str]] = {}
            for f in files:
                for key, array in _read_file(f, None).items():
                    if key in arrays and _same(arrays[key][0], array):
                        continue  # x.npy beside the inputs.npz of the same folder (--save-inputs, -o)
                    if key in arrays:  # e.g. x.npy beside an .npz that holds another x
                        raise InputError(f"{what} '{key}' is given twice in {path} ({arrays[key][1]} and {f})",
                                         fix=f"keep one file per {what} in the directory")
                    arrays[key] = (array, str(f))
        else:
            arrays = {k: (v, str(path)) for k, v in _read_file(path, name).items()}
        for key, (array, where) in arrays.items():
            if key in feeds:
                raise InputError(f"{what} '{key}' is given twice ({origin[key]} and {where})",
                                 fix=f"give each {what} once")
            feeds[key] = array
            origin[key] = where
    if unknown := [k for k in feeds if k not in known]:
        raise InputError(f"unknown {what} name(s) {', '.join(unknown)} from "
                         f"{', '.join(sorted({origin[k] for k in unknown}))}",
                         fix=f"the model's {what}s are: {', '.join(known)} (name files after them, "
                             "or use name=file.npy)")
    return {k: feeds[k] for k in known if k in feeds}, origin


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


InputGenerator = Callable[[int, int], dict[str, np.ndarray]]


def generate_inputs(input_specs: Sequence[InputSpec] | None, signature: Signature, batch: int,
                    seed: int = 0, generator: InputGenerator | None = None) -> dict[str, np.ndarray]:
    """Realistic inputs: the model's generator when given, else its input specs, else generic ones.

    Only the signature's inputs are kept, in signature order.
    """
    if batch < 1:
        raise InputError(f"batch {batch} is not positive: batch sizes must be >= 1", fix="use --batch 1 or more")
    if generator is not None:
        feeds = generator(batch, seed)
    else:
        specs = list(input_specs) if input_specs else specs_from_signature(signature.inputs)
        feeds = generate_from_specs(specs, batch, seed)
    if missing := [n for n in signature.input_names if n not in feeds]:
        raise InputError(f"the input generator gives no value for {', '.join(missing)}",
                         fix="pass the inputs with --input")
    return {name: feeds[name] for name in signature.input_names}


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def output_file_name(name: str) -> str:
    safe = _UNSAFE.sub("_", name).strip(".") or "output"
    return safe + ".npy"


def save_outputs(outputs: Mapping[str, np.ndarray], out_dir: str | Path) -> list[Path]:
    """One .npy per output (name made file-safe) plus outputs.npz keyed by the real names."""
    return save_arrays(outputs, out_dir, "outputs", option="-o")


def save_inputs(feeds: Mapping[str, np.ndarray], out_dir: str | Path) -> list[Path]:
    """The inputs a run used: one .npy each, inputs.npz, and inputs.json in Polygraphy's format;
    `vlc run -i DIR`, `-i DIR/inputs.json` and `polygraphy run --load-inputs` read them back."""
    written = save_arrays(feeds, out_dir, "inputs", option="--save-inputs")
    (Path(out_dir) / "inputs.json").write_text(polygraphy_json(feeds))
    return [*written, Path(out_dir) / "inputs.json"]


def save_arrays(arrays: Mapping[str, np.ndarray], out_dir: str | Path, archive: str, *, option: str
                ) -> list[Path]:
    """One .npy per array (name made file-safe) plus ARCHIVE.npz keyed by the real names."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out_dir}: {first_line(exc, limit=200)}",
                         fix=f"choose a writable directory with {option}") from None
    written: list[Path] = []
    used: set[str] = set()
    for name, array in arrays.items():
        file_name = output_file_name(name)
        stem, n = file_name[:-4], 1
        while file_name in used or file_name == f"{archive}.npy":
            file_name, n = f"{stem}_{n}.npy", n + 1
        used.add(file_name)
        np.save(out_dir / file_name, np.asarray(array))
        written.append(out_dir / file_name)
    write_npz(out_dir / f"{archive}.npz", arrays)
    written.append(out_dir / f"{archive}.npz")
    return written


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz numpy.load reads back with exactly these names. numpy.savez(path, **arrays) takes
    its own parameters from the names (an output called 'file' or 'allow_pickle'), so the members
    are written here; into a temporary file first, so a failure leaves no half archive."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def nonfinite_notes(feeds: Mapping[str, np.ndarray]) -> list[str]:
    """One warning per floating input holding NaN or Inf: its outputs' statistics mean nothing."""
    notes = []
    for name, array in feeds.items():
        if np.issubdtype(array.dtype, np.inexact) and not (finite := np.isfinite(array)).all():
            notes.append(f"input '{name}' has {array.size - int(finite.sum())} NaN or Inf value(s) "
                         f"of {array.size}; the outputs will carry them")
    return notes


def read_json_object(path: Path, *, what: str, fix: str) -> dict[str, Any]:
    """A JSON object from a file a user hands vlc (a bundle's description, a record), or one line
    saying what is wrong with it instead of a JSONDecodeError."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {path}: {first_line(exc, limit=200)}", fix=fix) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno})", fix=fix) from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {path} holds a JSON {type(data).__name__}, not an object", fix=fix)
    return data


def require_keys(data: Mapping[str, Any], keys: Sequence[str], *, what: str, fix: str) -> None:
    """Every dotted key ('signature.outputs') is present, else one line naming the first missing."""
    for key in keys:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise InputError(f"{what} lacks '{key}'", fix=fix)
            node = node[part]


def array_stats(array: np.ndarray) -> dict[str, Any]:
    """Shape, dtype and value statistics of one output, for printing."""
    a = np.asarray(array)
    stats: dict[str, Any] = {"shape": list(a.shape), "dtype": a.dtype.name}
    if a.size and (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        f = a.astype(np.float64)
        stats.update(min=float(f.min()), max=float(f.max()), mean=float(f.mean()), std=float(f.std()),
                     finite=bool(np.isfinite(f).all()))
    return stats


def default_batch(artifact: Any) -> int:
    """The batch a run uses when none is given: the compiled opt batch, else the smallest allowed."""
    spec = artifact.spec
    if spec.batch:
        return int(spec.batch[1])
    allowed = artifact.manifest.batch_range
    return int(allowed[0]) if allowed else 1


def check_batch(artifact: Any, batch: int) -> None:
    """Fail before any work when `batch` is outside what the artifact was compiled for."""
    if batch < 1:
        raise InputError(f"batch {batch} is not positive: batch sizes must be >= 1", fix="use --batch 1 or more")
    allowed = artifact.manifest.batch_range
    if allowed and not allowed[0] <= batch <= allowed[1]:
        lo, hi = allowed
        # fixed in the graph itself, not a size vlc chose for a dynamic batch (manifest shape_choice)
        fixed = lo == hi and not artifact.spec.batch and all(
            t.shape and isinstance(t.shape[0], int) for t in artifact.signature.inputs)
        raise InputError(f"batch {batch} is outside the compiled range {lo}..{hi}", where=str(artifact.path),
                         fix=(f"the graph has a fixed batch of {lo}; use --batch {lo}" if fixed else
                              recompile_fix(artifact, batch)))


def recompile_fix(artifact: Any, batch: int) -> str:
    """The --batch that covers `batch` too, keeping the artifact's compiled opt batch."""
    lo, hi = artifact.manifest.batch_range
    opt = int(artifact.spec.batch[1]) if artifact.spec.batch else lo
    return f"recompile with --batch {min(lo, batch)},{opt},{max(hi, batch)}"
