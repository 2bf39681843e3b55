"""`vlc targets`: every registered target, whether it can run here, and why not."""

from __future__ import annotations

from typing import Any

import typer

from vlc.cli import console


def runs_here(available: bool, devices: list[str]) -> str:
    """The table's "runs here": yes; "compile only" (it builds here, but no device to run on,
    e.g. trt-rtx on a machine without a GPU); no."""
    if not available:
        return "no"
    return "yes" if devices else "compile only"


def describe_targets() -> dict[str, Any]:
    from vlc import plugin_manager

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
            "options": {k: {"help": o.help, "type": o.type.__name__, "default": o.default}
                        for k, o in sorted(target.options.items())},
            "plugin": type(target).__module__,
        })
    return {"targets": rows, "load_errors": list(plugin_manager.load_errors)}


def register(app: typer.Typer) -> None:
    @app.command("targets")
    def targets(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """List compilation targets, what each supports, and whether it can run on this machine."""
        data = describe_targets()
        if json_out:
            console.emit_json(data)
            return
        rows = [[t["name"], t["runs_here"],
                 ", ".join(t["devices"]) if t["devices"] else f"({', '.join(t['supported_devices'])})",
                 ", ".join(t["precisions"]), ", ".join(t["presets"]),
                 ", ".join(f"{k} {v}" for k, v in t["versions"].items())] for t in data["targets"]]
        console.table("targets (devices in parentheses: supported, but not on this machine)",
                      ["target", "runs here", "devices", "precisions", "presets", "versions"], rows)
        for t in data["targets"]:
            if t["runs_here"] == "no":
                console.out.print(f"[bold]{console.escape(t['name'])}[/] cannot run here: "
                                  f"{console.escape(t['reason'])}", markup=True, highlight=False)
            elif t["runs_here"] == "compile only":
                console.out.print(f"[bold]{console.escape(t['name'])}[/] compiles here but cannot run: "
                                  f"{console.escape(t['reason'] or 'no device')}", markup=True, highlight=False)
        console.out.print("options of a target (-O key=value): `vlc targets --json`", highlight=False)
        if data["load_errors"]:
            console.table("plugins that failed to load", ["plugin error"], [[e] for e in data["load_errors"]])
