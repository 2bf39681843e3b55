"""The Ascend tests run against STAND-IN atc and ais_bench (tests/standins), never real tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

STANDINS = Path(__file__).resolve().parents[2] / "standins"


@pytest.fixture
def standins(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{STANDINS}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("VLC_AIS_BENCH", str(STANDINS / "ais_bench_cli"))
    monkeypatch.delenv("VLC_ATC", raising=False)
    monkeypatch.setenv("STANDIN_CANN", "8")
    return STANDINS
