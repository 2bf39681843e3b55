"""What a node offers a campaign, as Ray custom resources named `vlc/...`.

The probe is `vlc targets`' availability check: every target that can run (or build) here is
`vlc/<target>`. TensorRT-RTX splits what it needs in two, as an A10 engine is built on any
machine and timed only on an A10:
- the toolchain, `vlc/trt-build-sm<NN>`: its builder can target compute capability NN (an
  ahead-of-time build needs no GPU);
- the hardware, `vlc/trt-sm<NN>`: a GPU of compute capability NN is here and TensorRT-RTX runs
  on it (from nvidia-smi's compute_cap).
An Ascend target adds its SoC family (`vlc/ascend310p` when atc and ais_bench are found, which
is what that target's check asks). A campaign's `requires` names where a cell is measured;
`build_requires` where it is compiled when that may be elsewhere (by default the toolchain
resource for TensorRT-RTX, `build_resources`), so users need not know Ray's flags.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from vlc.availability import describe_targets
from vlc.environment import nvidia_gpus
from vlc.errors import InputError

PREFIX = "vlc/"
RTX_TARGET = "trt-rtx"  # the target whose engines build ahead of time for a GPU elsewhere
RTX_BUILD = PREFIX + "trt-build-sm"  # + "86": the TensorRT-RTX builder targets compute capability 8.6
RTX_RUN = PREFIX + "trt-sm"  # + "86": a GPU of compute capability 8.6 runs TensorRT-RTX engines here


def probe_resources() -> dict[str, float]:
    """This machine's `vlc/...` resources from the targets' availability checks."""
    offered: dict[str, float] = {}
    for row in describe_targets()["targets"]:
        if not row["available"]:
            continue
        offered[PREFIX + row["name"]] = 1.0
        if row["name"] == RTX_TARGET:
            for cc in rtx_build_capabilities():
                offered[f"{RTX_BUILD}{cc}"] = 1.0
            if "cuda" in row["devices"]:
                for cc in gpu_capabilities():
                    offered[f"{RTX_RUN}{cc}"] = 1.0
    return dict(sorted(offered.items()))


def rtx_build_capabilities() -> list[str]:
    """Compute capabilities ("86") TensorRT-RTX's builder can target, from its own enum."""
    try:
        module: Any = importlib.import_module("tensorrt_rtx")
        members = module.ComputeCapability.__members__
    except Exception:  # noqa: BLE001 - no (or a broken) TensorRT-RTX: it builds for nothing here
        return []
    return sorted((name[2:] for name in members if name.startswith("SM") and name[2:].isdigit()), key=int)


def gpu_capabilities() -> list[str]:
    """Compute capabilities ("86") of this machine's NVIDIA GPUs."""
    found = {gpu["compute_capability"].replace(".", "") for gpu in nvidia_gpus() if gpu.get("compute_capability")}
    return sorted(found, key=int)


def build_resources(target: Any) -> dict[str, float]:
    """Where a target's artifacts can be built when that is not where they run: TensorRT-RTX
    builds for its default preset's compute capability on any node with the toolchain; every
    other target builds where it is measured (empty)."""
    if not target.capabilities.builds_without_device or target.name != RTX_TARGET:
        return {}  # the toolchain resource below is TensorRT-RTX's (the probe offers it)
    preset = target.presets.get(target.default_preset or "") or {}
    cc = str(preset.get("compute_capability", "")).replace(".", "")
    return {f"{RTX_BUILD}{cc}": 1.0} if cc.isdigit() else {}


def describe(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items()))


def parse_resources(text: str | None) -> dict[str, float]:
    """--resources JSON: an object of resource names to positive amounts."""
    if not text:
        return {}
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--resources is not JSON: {exc.msg}", fix='e.g. --resources \'{"vlc/a10": 1}\'') from None
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and k and not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0
            for k, v in data.items()):
        raise InputError("--resources must be a JSON object of names to positive numbers",
                         fix='e.g. --resources \'{"vlc/a10": 1}\'')
    return {k: float(v) for k, v in data.items()}
