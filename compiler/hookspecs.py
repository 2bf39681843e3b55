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

    from vlc.frontend.passes import GraphPass, PassSet
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
    """Register named ONNX graph passes.

    Call ``register(graph_pass)`` with a :class:`vlc.frontend.passes.GraphPass`; users select
    passes by name with ``vlc export --passes a,b``, and the front end and targets run the pass
    sets they own (``register_pass_sets``). Every registered pass must be in a registered set,
    and two plugins registering one name is an error. A pass that declares ``keeps_numerics``
    has tests comparing the graph before and after in ONNX Runtime.
    """


@hookspec
def register_pass_sets(register: Callable[[PassSet], None]) -> None:
    """Register ordered pass sets.

    Call ``register(pass_set)`` with a :class:`vlc.frontend.passes.PassSet`: a name, its owner
    (who runs it) and the ordered pass names. A set naming a pass nobody registered is an
    error when the registry is built, not a pass silently skipped.
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
