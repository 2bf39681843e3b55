"""Which TensorRT is installed: `tensorrt` (10.x / 11.x) or `tensorrt_rtx`, imported lazily."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from types import ModuleType

from vlc.errors import TargetUnavailable

TENSORRT = "tensorrt"
TENSORRT_RTX = "tensorrt_rtx"


@dataclass(frozen=True)
class Backend:
    module: ModuleType
    name: str  # "tensorrt" or "tensorrt_rtx"
    version: str

    @property
    def is_rtx(self) -> bool:
        return self.name == TENSORRT_RTX

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def has_precision_flags(self) -> bool:
        """FP16/INT8/BF16 builder flags exist only before TensorRT 11 and never on TensorRT-RTX."""
        return not self.is_rtx and self.major < 11 and hasattr(self.module.BuilderFlag, "FP16")

    def rtx_targets(self) -> dict[tuple[int, int], object]:
        """Compute capabilities the RTX builder can target, from its ComputeCapability enum."""
        found = {}
        for key, value in self.module.ComputeCapability.__members__.items():
            if key.startswith("SM") and key[2:].isdigit():
                digits = key[2:]
                found[(int(digits[:-1]), int(digits[-1]))] = value
        return found


@cache
def _import(name: str) -> ModuleType | str:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - a broken install raises more than ImportError
        return f"{type(exc).__name__}: {exc}"


def load_backend(prefer: str) -> Backend:
    """`prefer` "tensorrt": TensorRT 10/11 only; "tensorrt_rtx": TensorRT-RTX only.

    An engine is tied to the runtime that built it: TensorRT cannot load a TensorRT-RTX engine,
    so `trt` never builds with TensorRT-RTX; where only TensorRT-RTX is installed it refuses and
    points at `trt-rtx`.
    """
    if prefer == TENSORRT:
        trt = _import(TENSORRT)
        if isinstance(trt, ModuleType):
            return Backend(trt, TENSORRT, trt.__version__)
        rtx = _import(TENSORRT_RTX)
        if isinstance(rtx, ModuleType):
            raise TargetUnavailable(f"TensorRT 10/11 is not installed ({trt}); only TensorRT-RTX "
                                    f"{rtx.__version__} is, and TensorRT cannot load its engines",
                                    fix="use --target trt-rtx, or install TensorRT 10/11 from NVIDIA "
                                        "(pip install tensorrt) on a machine with its GPU")
        raise TargetUnavailable(f"neither tensorrt nor tensorrt_rtx imports (tensorrt: {trt}; "
                                f"tensorrt_rtx: {rtx})",
                                fix="pip install tensorrt-rtx-cu13 (CPU builds), or TensorRT 10/11 from NVIDIA")
    rtx = _import(TENSORRT_RTX)
    if isinstance(rtx, ModuleType):
        return Backend(rtx, TENSORRT_RTX, rtx.__version__)
    raise TargetUnavailable(f"tensorrt_rtx does not import ({rtx})", fix="pip install tensorrt-rtx-cu13")
