"""What every registered target can do on this machine: `vlc targets` prints it, a campaign
node offers it as resources (vlc.campaign.resources), the contract suite checks it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from vlc import plugin_manager


def runs_here(available: bool, devices: list[str]) -> str:
    """The table's "runs here": yes; "compile only" (it builds here, but no device to run on,
    e.g. trt-rtx on a machine without a GPU); no."""
    if not available:
        return "no"
    return "yes" if devices else "compile only"


def describe_targets() -> dict[str, Any]:
    """Every registered target's row (availability, devices, precisions, presets, options) and
    the plugins that failed to load."""
    rows = []
    for name, target in sorted(plugin_manager.targets().items()):
        try:
            status = target.available()
            ok, reason, versions, devices = status.ok, status.reason, status.versions, status.devices
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            ok, reason, versions, devices = False, f"available() failed: {type(exc).__name__}: {exc}", {}, []
        rows.append({
            "name": name, "summary": target.summary, "available": ok, "reason": reason,
            "runs_here": runs_here(ok, devices),
            "versions": dict(versions), "devices": list(devices) if ok else [],
            "supported_devices": list(target.devices),
            "precisions": [p.value for p in target.precisions],
            "presets": sorted(target.presets), "default_preset": target.default_preset,
            "options": {k: o.describe() for k, o in sorted(target.options.items())},
            "capabilities": asdict(target.capabilities),
            "plugin": type(target).__module__,
        })
    return {"targets": rows, "load_errors": list(plugin_manager.load_errors)}
