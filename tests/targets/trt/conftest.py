"""Fixtures for the trt target tests: the tiny ONNX models of tests/frontend/precision."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_TINY = Path(__file__).resolve().parents[2] / "frontend" / "precision" / "tiny_models.py"


def _load_tiny_models():
    if "tiny_models" in sys.modules:
        return sys.modules["tiny_models"]
    spec = importlib.util.spec_from_file_location("tiny_models", _TINY)
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_models"] = module
    spec.loader.exec_module(module)
    return module


tiny_models = _load_tiny_models()


@pytest.fixture(scope="session")
def tiny_graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trt-graphs")
    return {name: tiny_models.export(name, root / f"{name}.onnx") for name in tiny_models.MODELS}
