"""The hooks vlc calls; plugins implement them with `@vlc.hookimpl`.

Each hook receives a `register` callback from the host rather than returning values, so the
host can grow the callback's keyword arguments without breaking existing plugins.
Built-in targets are loaded exactly like third-party plugins (entry-point group `vlc`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from vlc.frontend.passes import GraphPass
    from vlc.target import Target

hookspec = pluggy.HookspecMarker("vlc")
hookimpl = pluggy.HookimplMarker("vlc")


@hookspec
def register_targets(register: Callable[[Target], None]) -> None:
    """Register compilation targets.

    Call ``register(target)`` once per :class:`vlc.target.Target` instance. The target's
    ``name`` is what users pass to ``--target``; two plugins registering the same name is an
    error reported by ``vlc targets``. Import vendor SDKs lazily inside the target's methods,
    never at module import, so that listing targets works on machines without the SDK.
    """


@hookspec
def register_passes(register: Callable[[GraphPass], None]) -> None:
    """Register named ONNX graph passes for the front end's pass manager.

    Call ``register(graph_pass)`` with a :class:`vlc.frontend.passes.GraphPass`; users select
    passes by name with ``vlc export --passes a,b``, and targets name the pass sets they need.
    A pass must keep numerics: its tests compare the graph before and after in ONNX Runtime.
    """


@hookspec
def register_plugins(register: Callable[[Any], None]) -> None:
    """Register custom-operator plugins (pattern, reference implementation, per-target kernels).

    Call ``register(plugin)`` with an object of ``vlc.plugins`` type ``OpPlugin``; ``vlc plugins``
    lists them with their status per target.
    """


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add commands to the ``vlc`` command line.

    ``app`` is the root Typer application; add commands with ``app.command()`` or sub-groups
    with ``app.add_typer()``. Command names must not clash with built-in ones.
    """
