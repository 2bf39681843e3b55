"""Polygraphy bound to the TensorRT module of a Backend (`tensorrt` or `tensorrt_rtx`).

Polygraphy chooses its TensorRT module once per process, when `polygraphy.backend.trt` is first
imported, from `polygraphy.config.USE_TENSORRT_RTX` (what the POLYGRAPHY_USE_TENSORRT_RTX
environment variable sets; polygraphy/mod/trt_importer.py). vlc sets that flag before the
import. Importing those modules a second time under the other flag is not possible (their
JSON codecs register once), so a process bound to one module refuses the other with one line:
`trt` and `trt-rtx` then run in separate vlc commands.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from vlc.errors import TargetUnavailable
from vlc.targets.trt.backend import Backend


@dataclass(frozen=True)
class Polygraphy:
    """The Polygraphy modules vlc calls, bound to one TensorRT module."""

    trt: ModuleType  # polygraphy.backend.trt: loaders, Profile, TrtRunner
    rtx: ModuleType | None  # polygraphy.backend.tensorrt_rtx (CreateConfigRTX), TensorRT-RTX only
    logger: Any  # polygraphy.logger.G_LOGGER
    error: type[Exception]  # PolygraphyException: what G_LOGGER.critical raises
    version: str


def _import_polygraphy() -> ModuleType:
    try:
        return importlib.import_module("polygraphy")
    except ImportError as exc:
        raise TargetUnavailable(f"polygraphy is not installed ({exc}); vlc builds and runs TensorRT "
                                "engines through it",
                                fix="pip install polygraphy (it comes with the vlc[trt] and "
                                    "vlc[trt-rtx] extras)") from None


_bound: list[str] = []  # the TensorRT module vlc bound Polygraphy to in this process


def bound_module() -> str | None:
    """The TensorRT module Polygraphy is bound to in this process; None before its import.

    Bound by vlc: the one it chose; imported by something else first: the one the flag named."""
    if _bound:
        return _bound[-1]
    if "polygraphy.backend.trt.loader" not in sys.modules:
        return None
    from polygraphy import config

    return "tensorrt_rtx" if config.USE_TENSORRT_RTX else "tensorrt"


def polygraphy_for(backend: Backend) -> Polygraphy:
    """Polygraphy with `backend.name` as its TensorRT module."""
    polygraphy = _import_polygraphy()
    from polygraphy import config

    bound = bound_module()
    if bound is not None and bound != backend.name:
        other = "trt-rtx" if backend.is_rtx else "trt"
        raise TargetUnavailable(f"Polygraphy in this process already uses {bound}, and it takes one "
                                f"TensorRT module per process (POLYGRAPHY_USE_TENSORRT_RTX)",
                                fix=f"run the {other} target in a vlc command of its own")
    if bound is None:
        config.USE_TENSORRT_RTX = backend.is_rtx
    trt = importlib.import_module("polygraphy.backend.trt")
    rtx = importlib.import_module("polygraphy.backend.tensorrt_rtx") if backend.is_rtx else None
    _bound[:] = [backend.name]
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    return Polygraphy(trt, rtx, G_LOGGER, PolygraphyException, polygraphy.__version__)
