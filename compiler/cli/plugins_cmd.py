"""`vlc plugins`: the custom-operator plugins and their status on every target."""

from __future__ import annotations

from typing import Any

import typer

from vlc import plugin_manager
from vlc.cli import console


def describe_plugins() -> dict[str, Any]:
    from vlc.plugins.apply import known_targets  # local: loads onnx and onnx_ir
    from vlc.plugins.base import load_decisions  # local: loads onnx and onnx_ir

    plugins = plugin_manager.op_plugins()
    targets = known_targets(plugins.values())
    decisions = load_decisions()
    return {
        "targets": targets,
        "plugins": [p.to_json(targets) for _, p in sorted(plugins.items())],
        "decisions": {"measured": decisions.get("measured", False), "source": decisions.get("source", ""),
                      "rule": decisions.get("rule", "")},
        "load_errors": list(plugin_manager.load_errors),
    }


def _cell(entry: dict[str, Any]) -> str:
    if entry["status"] == "unsupported":
        return "unsupported"
    if entry["kernel"]:
        return f"{entry['status']}, kernel {'on' if entry['on_by_default'] else 'off'}"
    return entry["status"]


def register(app: typer.Typer) -> None:
    @app.command("plugins")
    def plugins(json_out: bool = typer.Option(False, "--json", help="Print JSON."),
                verbose: bool = typer.Option(False, "--verbose", "-v",
                                             help="Also print each target's reason and native form.")) -> None:
        """List custom-operator plugins (SiLU, GELU, LayerNorm, ...) and their status per target.

        Status: plugin (vlc has a kernel for the target), native-preferred (the target's own operator
        is used), unsupported (the node is expanded back to standard ONNX). A kernel is on by default
        only where the kernel benchmark measured it faster than the native path.
        """
        data = describe_plugins()
        if json_out:
            console.emit_json(data)
            return
        targets = data["targets"]
        rows = [[p["name"], p["op"], *(_cell(p["targets"][t]) for t in targets)] for p in data["plugins"]]
        console.table("plugins", ["plugin", "operator", *targets], rows)
        if verbose:
            detail = [[p["name"], t, e["status"], e["native_form"], e["reason"]]
                      for p in data["plugins"] for t, e in p["targets"].items() if e["status"] != "unsupported"]
            console.table("per-target detail", ["plugin", "target", "status", "native form", "reason"], detail)
        measured = data["decisions"]
        console.info(f"kernel defaults (plugins/decisions.json): {measured['source']}")
        if data["load_errors"]:
            console.table("plugins that failed to load", ["plugin error"], [[e] for e in data["load_errors"]])
