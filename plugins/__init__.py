"""Custom-operator plugins: ONNX patterns fused into ai.vlc nodes, a reference expansion that ONNX
Runtime runs, and per-target implementations (TensorRT Python plugins with Triton kernels, the
native ATC forms for Ascend), kept on only where a benchmark showed them faster.

Third-party plugins implement the ``register_plugins(register)`` hook and call ``register`` with
an :class:`OpPlugin`; the built-ins live in ``vlc.plugins.builtin``.
"""

from vlc.plugins.apply import (
    PluginReport,
    apply_plugins,
    expand,
    fuse,
    registered_plugins,
)
from vlc.plugins.base import (
    DOMAIN,
    PLUGIN_NAMESPACE,
    STATUSES,
    UNSUPPORTED,
    OpPlugin,
    TargetImpl,
    decision,
    load_decisions,
)

__all__ = [
    "DOMAIN", "PLUGIN_NAMESPACE", "STATUSES", "UNSUPPORTED", "OpPlugin", "PluginReport",
    "TargetImpl", "apply_plugins", "decision", "expand", "fuse", "load_decisions",
    "registered_plugins",
]
