"""What a node offers a campaign, as Ray custom resources named `vlc/...`.

The probe is `vlc targets`' availability check: every target that can run (or build) here is
`vlc/<target>`; TensorRT-RTX adds `vlc/trt-sm<NN>` for every compute capability its builder
can target (ahead-of-time builds need no GPU); an Ascend target adds its SoC family
(`vlc/ascend310p` when atc and ais_bench are found, which is what that target's check asks).
A campaign's `requires` names these, so users need not know Ray's flags.
"""

from __future__ import annotations

import json
from typing import Any

from vlc.errors import InputError

PREFIX = "vlc/"


def probe_resources() -> dict[str, float]:
    """This machine's `vlc/...` resources from the targets' availability checks."""
    from vlc.cli.targets_cmd import describe_targets

    offered: dict[str, float] = {}
    for row in describe_targets()["targets"]:
        if not row["available"]:
            continue
        offered[PREFIX + row["name"]] = 1.0
        if row["name"] == "trt-rtx":
            for cc in _rtx_capabilities():
                offered[f"{PREFIX}trt-sm{cc}"] = 1.0
    return dict(sorted(offered.items()))


def _rtx_capabilities() -> list[str]:
    try:
        from vlc.targets.trt.backend import TENSORRT_RTX, load_backend

        found = load_backend(TENSORRT_RTX)
    except Exception:  # noqa: BLE001 - no TensorRT-RTX: nothing to advertise beyond the target
        return []
    if not getattr(found, "is_rtx", False):
        return []
    return [f"{major}{minor}" for major, minor in sorted(found.rtx_targets())]


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
