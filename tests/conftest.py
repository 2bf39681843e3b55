"""Shared fixtures: a per-test front-end cache and the CLI entry point."""

from __future__ import annotations

import importlib
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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # One cache per test session: exports are reused across tests but never leak between runs.
    monkeypatch.setenv("VLC_CACHE", str(tmp_path_factory.getbasetemp() / "vlc-cache"))


@pytest.fixture
def vlc_cli(capsys: pytest.CaptureFixture[str]):
    """Run `vlc ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from vlc.cli.app import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
