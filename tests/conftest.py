"""Shared fixtures: a per-session front-end cache and the CLI entry point."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "models.py"


def rtx_has_python_plugins() -> bool:
    """Whether this TensorRT-RTX ships tensorrt_rtx.plugin (1.7's wheel does not)."""
    try:
        importlib.import_module("tensorrt_rtx.plugin")
    except ImportError:
        return False
    return True


def model_ref(factory: str) -> str:
    return f"{MODELS}:{factory}"


_SAVED_ENV: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """One front-end cache per test session, set before any fixture (of any scope) or import runs.

    Exports are reused across the tests of a run but never leak between runs, and nothing is
    written into the checkout or the user's own cache.
    """
    cache = Path(tempfile.mkdtemp(prefix="vlc-test-cache-"))
    _SAVED_ENV["VLC_CACHE"] = os.environ.get("VLC_CACHE")
    _SAVED_ENV["_dir"] = str(cache)
    os.environ["VLC_CACHE"] = str(cache)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "_dir" not in _SAVED_ENV:
        return
    shutil.rmtree(_SAVED_ENV.pop("_dir"), ignore_errors=True)
    previous = _SAVED_ENV.pop("VLC_CACHE")
    if previous is None:
        os.environ.pop("VLC_CACHE", None)
    else:
        os.environ["VLC_CACHE"] = previous


@pytest.fixture
def vlc_cli(capsys: pytest.CaptureFixture[str]):
    """Run `vlc ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from vlc.cli.app import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def save_onnx(model, path: Path, *, location: str | None = None, one_file: bool = True) -> Path:
    """Save an onnx ModelProto at `path`; with `location`, every tensor as external data there
    (relative to the model's folder, subfolders created), as exporters of large models write them."""
    from onnx import save
    from onnx.external_data_helper import convert_model_to_external_data

    path.parent.mkdir(parents=True, exist_ok=True)
    if location is not None:
        (path.parent / location).parent.mkdir(parents=True, exist_ok=True)
        convert_model_to_external_data(model, all_tensors_to_one_file=one_file, location=location,
                                       size_threshold=0, convert_attribute=True)
    save(model, str(path))
    return path


@contextlib.contextmanager
def registered_plugin(plugin: object, name: str) -> Iterator[None]:
    """`plugin` registered with vlc's plugin manager (as an installed package's would be) for the
    duration; the target registry is re-read on entry and exit."""
    from vlc import plugin_manager

    manager = plugin_manager.get_plugin_manager()
    manager.register(plugin, name=name)
    plugin_manager.targets.cache_clear()
    try:
        yield
    finally:
        manager.unregister(plugin)
        plugin_manager.targets.cache_clear()
