"""Execution providers: short names, what this machine offers, and the choice per device."""

from __future__ import annotations

import contextlib
from typing import Any

from vlc.errors import InputError, TargetUnavailable

SHORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def parse_providers(value: Any) -> list[str]:
    """`-O providers=tensorrt,cuda,cpu` (or a JSON list) into ORT provider names, in order."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        full = SHORT_NAMES.get(item.lower(), item)
        if not full.endswith("ExecutionProvider"):
            raise InputError(f"unknown execution provider '{item}' in -O providers",
                             fix=f"use names like {', '.join(sorted(set(SHORT_NAMES)))} "
                                 "or full ORT provider names")
        names.append(full)
    if not names:
        raise InputError("-O providers is empty", fix="name at least one provider, e.g. -O providers=cpu")
    return names


def check_providers(device: str, wanted: list[str]) -> None:
    """An override must fit the device: GPU providers need --device cuda and the other way round."""
    if device == "cpu" and any(p in GPU_PROVIDERS for p in wanted):
        raise InputError(f"-O providers={','.join(wanted)} needs --device cuda",
                         fix="compile with --device cuda, or give only cpu providers")
    if device == "cuda" and not any(p in GPU_PROVIDERS for p in wanted):
        raise InputError("--device cuda with -O providers that has no GPU provider",
                         fix="add cuda or tensorrt to -O providers, or use --device cpu")


def load_cuda_libraries() -> None:
    """onnxruntime-gpu finds CUDA and cuDNN in the nvidia-* wheels (those torch installs) only when
    asked; without them its CUDA provider fails to load and sessions fall back to the CPU."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # provider-registration chatter is not the user's concern
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is not None:
        with contextlib.suppress(Exception):  # system-wide CUDA installs need no preloading
            preload()


def choose_providers(device: str, override: Any = None) -> list[str]:
    """The providers a session gets: the override if given, else CUDA (with CPU fallback) or CPU."""
    offered = available_providers()
    if override is not None:
        wanted = parse_providers(override)
        check_providers(device, wanted)
        if missing := [p for p in wanted if p not in offered]:
            raise TargetUnavailable(f"execution provider(s) {', '.join(missing)} not available in this "
                                    f"onnxruntime build", fix=f"available here: {', '.join(offered)}")
        return wanted
    if device == "cuda":
        load_cuda_libraries()
        if "CUDAExecutionProvider" not in offered:
            raise TargetUnavailable("device cuda needs onnxruntime's CUDAExecutionProvider, which this "
                                    f"onnxruntime build lacks (it offers {', '.join(offered)})",
                                    fix="pip install onnxruntime-gpu (vlc[ort-gpu]) on a CUDA machine")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
