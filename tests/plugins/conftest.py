"""Fixtures for the plugin tests: the tiny model exported once per (exporter, opset)."""

from __future__ import annotations

import pytest
from plugin_models import EXPORTS, export


@pytest.fixture(scope="session", params=EXPORTS, ids=[f"{e}-{o}" for e, o in EXPORTS])
def exported(request):
    exporter, opset = request.param
    return exporter, opset, export(exporter, opset)
