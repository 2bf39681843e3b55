"""The Ascend tests run against STAND-IN atc and ais_bench (tests/standins), never real tools."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from standin_env import STANDINS, standin_path


@pytest.fixture
def standins(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", standin_path())
    monkeypatch.setenv("VLC_AIS_BENCH", str(STANDINS / "ais_bench_cli"))
    monkeypatch.delenv("VLC_ATC", raising=False)
    monkeypatch.setenv("STANDIN_CANN", "8")
    return STANDINS


@pytest.fixture
def no_toolkit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without atc or ais_bench (also none left imported by another test's stand-in)."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    for name in ("VLC_AIS_BENCH", "VLC_ATC"):
        monkeypatch.delenv(name, raising=False)
    for module in [m for m in sys.modules if m == "ais_bench" or m.startswith("ais_bench.")]:
        monkeypatch.delitem(sys.modules, module)
