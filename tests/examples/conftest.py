"""Test-size examples, built once per session (building is cheap, importing transformers is not)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vlc import examples


@pytest.fixture(scope="session")
def test_source() -> Callable[[str], Any]:
    """name -> its test-size ModelSource, shared by the tests that only read it."""
    cache: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in cache:
            cache[name] = examples.load(name, size="test")
        return cache[name]

    return get


@pytest.fixture(params=examples.names())
def name(request: pytest.FixtureRequest) -> str:
    return request.param
