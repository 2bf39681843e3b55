"""Reading real weights for the examples from local files (nothing is ever downloaded).

Accepted, by what the path is:
- a plain state-dict file: `.pt`, `.pth`, `.th`, `.bin` (torch.save of a dict of tensors,
  read with `weights_only=True`) or `.safetensors`; a dict that wraps the tensors under
  "state_dict" or "model" is unwrapped;
- an allennlp model archive (`.tar.gz`, `.tgz`, `.tar`): its `weights.th` (or `best.th`);
- a directory: a Hugging Face model directory (`config.json` beside `model.safetensors` or
  `pytorch_model.bin`), which the Hugging Face examples load with `from_pretrained`, or an
  unpacked allennlp archive holding `weights.th`.

Every failure is an InputError naming the file and what to do; loading is strict, so a
tensor that is missing, left over, or of another shape is reported rather than ignored.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vlc.errors import InputError, first_line

STATE_DICT_SUFFIXES = (".pt", ".pth", ".th", ".bin", ".safetensors")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
ARCHIVE_MEMBERS = ("weights.th", "best.th")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHOWN = 5  # how many offending names an error lists
SAVE_HINT = "save the weights with torch.save(model.state_dict(), path)"


def resolve(path: str | Path, example: str) -> Path:
    """The weights path, checked to exist and to be of a kind this module reads."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"weights path {path} does not exist", where=example,
                         fix="pass an existing file or directory with --weights")
    if path.is_dir():
        if is_hf_dir(path) or _dir_member(path) is not None:
            return path
        raise InputError(f"weights directory {path} holds neither a Hugging Face model "
                         f"(config.json + {' or '.join(HF_WEIGHT_FILES)}) nor {ARCHIVE_MEMBERS[0]}",
                         where=example,
                         fix="point --weights at the model directory or weights file")
    if not _is_archive(path) and path.suffix.lower() not in STATE_DICT_SUFFIXES:
        raise InputError(f"cannot tell the format of weights file {path}", where=example,
                         fix=f"use a state dict ({', '.join(STATE_DICT_SUFFIXES)}), an allennlp "
                             f"archive ({', '.join(ARCHIVE_SUFFIXES)}) or a Hugging Face directory")
    return path


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any(
        (path / name).is_file() for name in HF_WEIGHT_FILES)


def read_state_dict(path: Path, example: str) -> dict[str, Any]:
    """All tensors stored at `path` (a resolved weights path), by name."""
    if path.is_dir():
        member = _dir_member(path)
        if member is None:  # a Hugging Face directory read as a plain state dict
            member = next(path / name for name in HF_WEIGHT_FILES if (path / name).is_file())
        return read_state_dict(member, example)
    if _is_archive(path):
        return _read_archive(path, example)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            import torch

            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except PermissionError:
        raise InputError(f"cannot read weights file {path}: permission denied", where=example,
                         fix="check the file's permissions") from None
    except Exception as exc:  # noqa: BLE001 - torch and safetensors raise many types for a bad file
        raise InputError(f"cannot read weights file {path}: {reason(exc)}", where=example,
                         fix="pass a state dict written by torch.save or safetensors") from None
    return _tensors(state, path, example)


def _read_archive(path: Path, example: str) -> dict[str, Any]:
    import torch

    try:
        with tarfile.open(path) as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            name = next((n for n in ARCHIVE_MEMBERS if n in members), None)
            if name is None:
                raise InputError(f"archive {path} holds no {' or '.join(ARCHIVE_MEMBERS)}",
                                 where=example, fix="pass an allennlp model archive (model.tar.gz)")
            handle = archive.extractfile(members[name])
            assert handle is not None
            data = io.BytesIO(handle.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"cannot read archive {path}: {reason(exc)}", where=example,
                         fix="pass an allennlp model archive (model.tar.gz)") from None
    try:
        state = torch.load(data, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive member
        raise InputError(f"cannot read {name} in archive {path}: {reason(exc)}", where=example,
                         fix="the archive's weights must be a torch state dict") from None
    return _tensors(state, path, example)


def _tensors(state: Any, path: Path, example: str) -> dict[str, Any]:
    import torch

    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not state:
        raise InputError(f"weights file {path} holds {type(state).__name__}, not a state dict",
                         where=example, fix=SAVE_HINT)
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"weights file {path} has entries that are not tensors: {_names(bad)}",
                         where=example, fix=SAVE_HINT)
    return {str(k): v for k, v in state.items()}


def load_into(module: Any, state: Mapping[str, Any], *, source: Path, example: str,
              rename: Callable[[str], str | None] = lambda name: name) -> None:
    """Load `state` into `module` strictly after renaming its keys (None drops a key).

    Missing tensors, tensors left over, and tensors of another shape are each reported with
    their first few names, so a checkpoint of another architecture fails with one clear line.
    """
    mapped: dict[str, Any] = {}
    for name, tensor in state.items():
        new = rename(name)
        if new is not None:
            mapped[new] = tensor
    expected = module.state_dict()
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    shapes = [f"{k} {list(mapped[k].shape)} vs {list(expected[k].shape)}" for k in expected
              if k in mapped and tuple(mapped[k].shape) != tuple(expected[k].shape)]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} of another shape (file vs model): {_names(shapes)}")
    if missing:
        problems.append(f"{len(missing)} missing: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} not in the model: {_names(unexpected)}")
    if problems:
        raise InputError(f"weights {source} do not fit {example}: " + "; ".join(problems),
                         where=example, fix="pass weights of this architecture and size "
                                            "(describe the example for its configuration)")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in mapped.items()}, strict=True)


def _dir_member(path: Path) -> Path | None:
    return next((path / n for n in ARCHIVE_MEMBERS if (path / n).is_file()), None)


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f", ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else "")


def reason(exc: BaseException) -> str:
    """The exception's type and first line, for a one-line error."""
    return first_line(exc, limit=200, with_type=True)
