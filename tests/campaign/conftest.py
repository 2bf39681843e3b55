"""Campaign tests: Ray bound to the loopback address, and a campaign file writer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every test node binds to 127.0.0.1 and the driver must reach them there: with this Ray
# resolves "localhost" addresses to the loopback one instead of the host's outward address.
# Read when ray is first imported, so it is set before any test imports it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture
def write_campaign(tmp_path: Path):
    from tests.campaign.campaign_helpers import campaign_text

    def write(*runs: str, name: str = "campaign.toml", results: Path | None = None, **top: str) -> Path:
        path = tmp_path / name
        path.write_text(campaign_text(results or tmp_path / "results", *runs, **top))
        return path

    return write
