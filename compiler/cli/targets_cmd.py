"""`vlc targets`: every registered target, whether it can run here, and why not."""

from __future__ import annotations

from typing import Any

import typer

from vlc.availability import describe_targets, runs_here
from vlc.cli import console

__all__ = ["describe_targets", "register", "runs_here"]  # the rows live in vlc.availability


def print_options(data: dict[str, Any]) -> None:
    """One table per target of its declared -O options (the schema the base class enforces)."""
    for t in data["targets"]:
        rows = [[name, o["type"], "—" if o["default"] is None else str(o["default"]),
                 ", ".join(map(str, o["choices"])) if o["choices"] else "", o["help"]]
                for name, o in t["options"].items()]
        if rows:
            console.table(f"{t['name']} options (-O key=value)", ["option", "type", "default", "choices", "what"],
                          rows)
        else:
            console.out.print(f"{t['name']}: no options", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("targets")
    def targets(json_out: bool = typer.Option(False, "--json", help="Print JSON."),
                options: bool = typer.Option(False, "--options", help="List every target's -O options: "
                                             "type, default, accepted values and what each does.")) -> None:
        """List compilation targets, what each supports, and whether it can run on this machine."""
        data = describe_targets()
        if json_out:
            console.emit_json(data)
            return
        if options:
            print_options(data)
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
        console.out.print("options of a target (-O key=value): `vlc targets --options`", highlight=False)
        if data["load_errors"]:
            console.table("plugins that failed to load", ["plugin error"], [[e] for e in data["load_errors"]])
