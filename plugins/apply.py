"""Rewriting a graph with the plugins for one target, and expanding vlc nodes back for ONNX Runtime."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
import onnx_ir as ir

from vlc.errors import InputError
from vlc.plugin_manager import op_plugins, targets
from vlc.plugins.base import DOMAIN, OpPlugin
from vlc.plugins.patterns import rule_set


@dataclass
class PluginReport:
    """What apply_plugins did, per plugin name: nodes fused from patterns, then how each was lowered."""

    target: str
    enabled: list[str]
    fused: dict[str, int] = field(default_factory=dict)
    plugin: dict[str, int] = field(default_factory=dict)  # lowered to the target's kernel
    native: dict[str, int] = field(default_factory=dict)  # lowered to the target's native form
    expanded: dict[str, int] = field(default_factory=dict)  # expanded back to the reference form

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "enabled": self.enabled, "fused": self.fused,
                "plugin": self.plugin, "native": self.native, "expanded": self.expanded}


def registered_plugins() -> dict[str, OpPlugin]:
    return op_plugins()


def known_targets(plugins: Iterable[OpPlugin]) -> list[str]:
    """Targets from `vlc targets` plus every target a plugin names (e.g. not yet installed)."""
    names: set[str] = set()
    with contextlib.suppress(Exception):  # a broken target plugin must not hide the plugin table
        names.update(targets())
    for plugin in plugins:
        names.update(plugin.targets)
    return sorted(names)


def _as_ir(model: Any) -> tuple[ir.Model, bool]:
    if isinstance(model, ir.Model):
        return model, False
    if isinstance(model, onnx.ModelProto):
        return ir.serde.deserialize_model(model), True
    raise InputError(f"apply_plugins takes an onnx_ir.Model or onnx.ModelProto, got {type(model).__name__}")


def opset_of(model: ir.Model) -> int:
    return int(model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0)))


def _run(model: ir.Model, rules: Sequence[Any]) -> int:
    return rule_set(list(rules)).apply_to_model(model) if rules else 0


def count_ops(model: ir.Model, op_type: str, domain: str = DOMAIN) -> int:
    return sum(1 for n in ir.traversal.RecursiveGraphIterator(model.graph)
               if n.op_type == op_type and n.domain == domain)


def _cleanup(model: ir.Model) -> None:
    from onnx_ir.passes import common

    common.RemoveUnusedNodesPass()(model)
    common.RemoveUnusedOpsetsPass()(model)


def _infer_shapes(model: ir.Model) -> None:
    """Best effort: shapes let the LayerNorm checks verify scale/bias sizes."""
    from onnx_ir.passes import common

    with contextlib.suppress(Exception):  # custom domains or big models may defeat onnx's inference
        common.ShapeInferencePass()(model)


def fuse(model: ir.Model, plugins: Iterable[OpPlugin]) -> dict[str, int]:
    """Patterns -> ai.vlc nodes, in place; returns nodes fused per plugin."""
    opset = opset_of(model)
    return {p.name: _run(model, p.fuse_rules(opset)) for p in plugins}


def expand(model: Any, plugins: Iterable[OpPlugin] | None = None) -> Any:
    """ai.vlc nodes -> standard operators (the reference form ONNX Runtime runs).

    Takes and returns an onnx_ir.Model (in place) or an onnx.ModelProto (a new one).
    """
    ir_model, was_proto = _as_ir(model)
    plugins = list(registered_plugins().values()) if plugins is None else list(plugins)
    opset = opset_of(ir_model)
    for p in plugins:
        _run(ir_model, p.expand_rules(opset))
    _cleanup(ir_model)
    return ir.serde.serialize_model(ir_model) if was_proto else ir_model


def _resolve_enabled(plugins: dict[str, OpPlugin], target: str,
                     enabled: Iterable[str] | None) -> list[str]:
    if enabled is None:
        return [name for name, p in plugins.items() if p.impl(target).default_on]
    names = list(dict.fromkeys(enabled))
    for name in names:
        if name not in plugins:
            raise InputError(f"unknown plugin '{name}'", fix=f"known plugins: {', '.join(sorted(plugins))} "
                                                            "(see `vlc plugins`)")
        if not plugins[name].impl(target).has_kernel:
            raise InputError(f"plugin '{name}' has no kernel for target '{target}'",
                             fix="see `vlc plugins` for what each target supports")
    return names


def apply_plugins(model: Any, target_name: str, enabled: Iterable[str] | None = None, *,
                  plugins: Iterable[OpPlugin] | None = None) -> tuple[Any, PluginReport]:
    """Rewrite `model` for `target_name`: fuse every plugin's pattern, then lower each fused node.

    `enabled`: the plugins whose kernels to use (names as in `vlc plugins`); None means those on
    by default for the target (decisions.json), an empty list means none. A fused node whose
    kernel is off becomes the target's native form, or the reference form when it has none.
    Returns (model, report); the model is the same object (onnx_ir) or a new ModelProto.
    """
    ir_model, was_proto = _as_ir(model)
    registry = {p.name: p for p in plugins} if plugins is not None else registered_plugins()
    targets = known_targets(registry.values())
    if target_name not in targets:
        raise InputError(f"unknown target '{target_name}'", fix=f"choose one of: {', '.join(targets)}")
    on = _resolve_enabled(registry, target_name, enabled)
    report = PluginReport(target_name, on)
    _infer_shapes(ir_model)
    report.fused = fuse(ir_model, registry.values())
    opset = opset_of(ir_model)
    for name, plugin in registry.items():
        impl = plugin.impl(target_name)
        nodes = count_ops(ir_model, plugin.op_type)
        if name in on:
            assert impl.plugin_rules is not None  # _resolve_enabled enables only plugins with a kernel
            _run(ir_model, impl.plugin_rules(opset))
            report.plugin[name] = nodes
        elif impl.native_rules is not None:
            _run(ir_model, impl.native_rules(opset))
            report.native[name] = nodes
        else:
            _run(ir_model, plugin.expand_rules(opset))
            report.expanded[name] = nodes
    _cleanup(ir_model)
    return (ir.serde.serialize_model(ir_model) if was_proto else ir_model), report
