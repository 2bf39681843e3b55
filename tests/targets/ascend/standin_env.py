"""Where the STAND-IN atc and ais_bench live (tests/standins) and the PATH that finds them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

STANDINS = Path(__file__).resolve().parents[2] / "standins"


def standin_path() -> str:
    """PATH with the stand-ins first and this interpreter's directory next: the stand-ins (and the
    bundles' scripts) start `python3`, which must be the one with vlc's dependencies even when
    the virtual environment is not activated (as in `./dev test`)."""
    return os.pathsep.join([str(STANDINS), str(Path(sys.executable).parent), os.environ["PATH"]])
