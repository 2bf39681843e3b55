"""The plugin manager: built-in targets and passes load as default plugins, others by entry point.

Set VLC_PLUGINS to a comma-separated list of plugin names to load only those third-party
plugins (an empty value loads none); built-ins always load.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import pluggy

from vlc import hookspecs
from vlc.errors import InputError

if TYPE_CHECKING:
    from vlc.frontend.passes import GraphPass, PassSet
    from vlc.target import Target

ENTRY_POINT_GROUP = "vlc"
log = logging.getLogger("vlc.plugins")

# Modules that implement hooks for the built-in targets, passes and plugins.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "vlc.targets.torch.plugin",
    "vlc.targets.onnxruntime.plugin",
    "vlc.targets.trt.plugin",
    "vlc.targets.ascend.plugin",
    "vlc.frontend.builtin_passes",
    "vlc.ascend_patches.plugin",
)

# Built-in modules that implement only `register_plugins`, imported when op plugins are first
# asked for: their patterns import onnx_ir and onnxscript (most of a second), which `vlc --help`
# and `vlc targets` must not pay. tests/cli/test_startup.py checks they implement no other hook.
DEFERRED_OP_PLUGINS: tuple[str, ...] = ("vlc.plugins.builtin",)

load_errors: list[str] = []


@cache
def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("vlc")
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a built-in with a missing optional dependency
            load_errors.append(f"{module_name}: {exc}")
            log.info("built-in plugin %s not loaded: %s", module_name, exc)
            continue
        pm.register(module, name=module_name)
    for module_name in DEFERRED_OP_PLUGINS:
        pm.register(_DeferredOpPlugins(module_name), name=module_name)
    allowed = os.environ.get("VLC_PLUGINS")
    if allowed is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    else:
        for name in filter(None, (n.strip() for n in allowed.split(","))):
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    for plugin, distribution in pm.list_plugin_distinfo():
        log.debug("plugin %s from %s %s", pm.get_name(plugin), distribution.project_name, distribution.version)
    return pm


class _DeferredOpPlugins:
    """Stands in for a built-in module implementing `register_plugins`; imports it on first call."""

    def __init__(self, module_name: str) -> None:
        self.module_name = module_name

    @hookspecs.hookimpl
    def register_plugins(self, register: Callable[[Any], None]) -> None:
        log.debug("importing %s for its op plugins", self.module_name)
        try:
            module = importlib.import_module(self.module_name)
        except ImportError as exc:  # a missing optional dependency, reported like a built-in's
            message = f"{self.module_name}: {exc}"
            if message not in load_errors:
                load_errors.append(message)
            return
        module.register_plugins(register=register)


def _collect(hook_name: str) -> list[Any]:
    items: list[Any] = []
    getattr(get_plugin_manager().hook, hook_name)(register=items.append)
    return items


@cache
def targets() -> dict[str, Target]:
    found: dict[str, Target] = {}
    for target in _collect("register_targets"):
        if target.name in found:
            raise InputError(f"two plugins register target '{target.name}'",
                             fix="uninstall one of them or limit loading with VLC_PLUGINS")
        found[target.name] = target
    log.debug("targets: %s", ", ".join(f"{n} ({type(t).__module__})" for n, t in found.items()))
    return found


def get_target(name: str) -> Target:
    known = targets()
    if name not in known:
        raise InputError(f"unknown target '{name}'",
                         fix=f"choose one of: {', '.join(sorted(known))} (see `vlc targets`)")
    return known[name]


def _collect_by_plugin(hook_name: str) -> list[tuple[str, Any]]:
    """(plugin name, item) for every item registered through `hook_name`."""
    items: list[tuple[str, Any]] = []
    for impl in getattr(get_plugin_manager().hook, hook_name).get_hookimpls():
        impl.function(register=lambda item, _plugin=impl.plugin_name: items.append((_plugin, item)))
    return items


def _by_name(hook_name: str, kind: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for plugin, item in _collect_by_plugin(hook_name):
        if item.name in found:
            raise InputError(f"two plugins register {kind} '{item.name}' ({origin[item.name]}, {plugin})",
                             fix="uninstall one of them or limit loading with VLC_PLUGINS")
        found[item.name], origin[item.name] = item, plugin
    return found


@cache
def _pass_registry() -> tuple[dict[str, GraphPass], dict[str, PassSet]]:
    """Passes and pass sets, checked together: every set names registered passes only and every
    registered pass is in a set (a pass in no set would never run where it is meant to)."""
    found = _by_name("register_passes", "pass")
    sets = _by_name("register_pass_sets", "pass set")
    not_loaded = f" (plugins not loaded: {'; '.join(load_errors)})" if load_errors else ""
    for pass_set in sets.values():
        missing = [n for n in pass_set.passes if n not in found]
        if missing:
            raise InputError(f"pass set '{pass_set.name}' ({pass_set.owner}) names unregistered pass "
                             f"'{missing[0]}'{not_loaded}",
                             fix="register the pass through register_passes, or drop it from the set")
    orphans = sorted(set(found) - {n for s in sets.values() for n in s.passes})
    if orphans:
        raise InputError(f"registered pass '{orphans[0]}' is in no pass set{not_loaded}",
                         fix="list it in its owner's pass set (register_pass_sets)")
    return found, sets


def passes() -> dict[str, GraphPass]:
    """Every registered graph pass by name."""
    return _pass_registry()[0]


def pass_sets() -> dict[str, PassSet]:
    """Every registered pass set by name."""
    return _pass_registry()[1]


@cache
def op_plugins() -> dict[str, Any]:
    return {p.name: p for p in _collect("register_plugins")}
