"""Polygraphy bound to the TensorRT module of a Backend (`tensorrt` or `tensorrt_rtx`).

Polygraphy chooses its TensorRT module once, when `polygraphy.backend.trt` is first imported,
from `polygraphy.config.USE_TENSORRT_RTX` (what the POLYGRAPHY_USE_TENSORRT_RTX environment
variable sets; polygraphy/mod/trt_importer.py). vlc sets that flag before the import. A process
that needs the other module later (a bench over `trt` and `trt-rtx` on a machine with both)
gets Polygraphy's TensorRT modules imported afresh under the other flag; objects made before
keep the modules they were made with.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from vlc.errors import TargetUnavailable
from vlc.targets.trt.backend import Backend

_TRT_PACKAGES = ("polygraphy.backend.trt", "polygraphy.backend.tensorrt_rtx")


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


def bound_module() -> str | None:
    """The TensorRT module name Polygraphy is bound to in this process; None before its import."""
    loader = sys.modules.get("polygraphy.backend.trt.loader")
    if loader is None:
        return None
    try:
        return loader.trt.__name__  # Polygraphy's lazy module: this imports the module it names
    except Exception:  # noqa: BLE001 - the module it was bound to does not import
        return None


def polygraphy_for(backend: Backend) -> Polygraphy:
    """Polygraphy with `backend.name` as its TensorRT module (rebinding it when it differs)."""
    polygraphy = _import_polygraphy()
    from polygraphy import config

    current = bound_module()
    if current is not None and current != backend.name:
        for name in [m for m in sys.modules if m.startswith(_TRT_PACKAGES)]:
            del sys.modules[name]
    config.USE_TENSORRT_RTX = backend.is_rtx
    trt = importlib.import_module("polygraphy.backend.trt")
    rtx = importlib.import_module("polygraphy.backend.tensorrt_rtx") if backend.is_rtx else None
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    return Polygraphy(trt, rtx, G_LOGGER, PolygraphyException, polygraphy.__version__)
