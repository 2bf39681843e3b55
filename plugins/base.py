"""The OpPlugin type: a graph pattern, a reference expansion, and per-target implementations.

A plugin's life in a graph has three steps, all onnxscript rewriter rules over onnx_ir:

1. fuse:   its ONNX pattern(s) -> one custom node in vlc's domain (``ai.vlc::SiLU`` ...);
2. lower:  per target, the custom node -> what that target consumes: the target's plugin node
           (its kernel is on), or the form the target maps to a native operator;
3. expand: the custom node -> standard ONNX operators (the reference implementation), so any
           graph with vlc nodes can be checked in ONNX Runtime.

A target's implementation has a status:

- ``plugin``: vlc has a kernel for this target; it is used when on (by default only where the
  kernel benchmark measured it faster than the native path, see decisions.json), otherwise the
  node is lowered to the native form.
- ``native-preferred``: the target has a native operator for the pattern, which vlc prefers;
  a vlc kernel may exist but is off by default (the reason says why).
- ``unsupported``: nothing target-specific; the node is expanded back to the reference form.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

DOMAIN = "ai.vlc"  # vlc's custom-operator domain in ONNX graphs
PLUGIN_NAMESPACE = "vlc"  # TensorRT plugin namespace: plugins are named vlc::SiLU, ...

Status = Literal["plugin", "native-preferred", "unsupported"]
STATUSES: tuple[str, ...] = ("plugin", "native-preferred", "unsupported")

# (opset of the default domain) -> rewrite rules. Rules are built per opset because standard
# forms differ between opsets (ReduceMean axes attribute < 18 <= input; LayerNormalization >= 17).
RuleFactory = Callable[[int], Sequence[Any]]


@dataclass(frozen=True)
class TargetImpl:
    """How one target runs one plugin's custom operator.

    ``plugin_rules`` lower the custom node to the target's plugin node (the kernel); ``native_rules``
    lower it to the form the target maps to a native operator; either may be None. When the
    plugin is off and there are no native rules, the node is expanded to the reference form.
    ``runtime`` is a target-specific object (for TensorRT: how to register the kernel).
    """

    status: Status
    reason: str
    default_on: bool = False
    plugin_rules: RuleFactory | None = None
    native_rules: RuleFactory | None = None
    native_form: str = ""  # what the native lowering emits, in words (for `vlc plugins`)
    runtime: Any = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.default_on and self.plugin_rules is None:
            raise ValueError("an implementation without plugin rules cannot be on by default")

    @property
    def has_kernel(self) -> bool:
        return self.plugin_rules is not None


UNSUPPORTED = TargetImpl("unsupported", "no implementation for this target: the node is "
                                        "expanded back to standard ONNX operators")


@dataclass(frozen=True)
class OpPlugin:
    """A custom operator: its pattern, its reference expansion, and its target implementations.

    ``fuse_rules(opset)`` produce ``ai.vlc::<op_type>`` nodes from the patterns it declares;
    ``expand_rules(opset)`` turn them back into standard operators. ``targets`` maps a target name
    (as in ``vlc targets``) to its implementation; targets not listed are ``unsupported``.
    """

    name: str  # what users type: silu, gelu, layernorm
    op_type: str  # the custom operator: ai.vlc::<op_type>
    summary: str
    pattern: str  # the matched ONNX forms, in words
    fuse_rules: RuleFactory
    expand_rules: RuleFactory
    targets: Mapping[str, TargetImpl] = field(default_factory=dict)

    def impl(self, target: str) -> TargetImpl:
        return self.targets.get(target, UNSUPPORTED)

    @property
    def op_id(self) -> str:
        return f"{DOMAIN}::{self.op_type}"

    def to_json(self, target_names: Sequence[str]) -> dict[str, Any]:
        return {
            "name": self.name, "op": self.op_id, "summary": self.summary, "pattern": self.pattern,
            "targets": {t: impl_json(self.impl(t)) for t in target_names},
        }


def impl_json(impl: TargetImpl) -> dict[str, Any]:
    return {"status": impl.status, "on_by_default": impl.default_on, "kernel": impl.has_kernel,
            "native_form": impl.native_form, "reason": impl.reason}


# ---- measured decisions ------------------------------------------------------------------

DECISIONS_FILE = "decisions.json"


def load_decisions() -> dict[str, Any]:
    """plugins/decisions.json: which kernels the benchmark measured faster than the native path."""
    text = resources.files("vlc.plugins").joinpath(DECISIONS_FILE).read_text()
    return json.loads(text)


def decision(plugin: str, target: str, decisions: Mapping[str, Any] | None = None) -> tuple[bool, str]:
    """(on by default, reason) for a plugin's kernel on a target; off when never measured."""
    data = load_decisions() if decisions is None else decisions
    entry = data.get("decisions", {}).get(plugin, {}).get(target)
    if entry is None:
        return False, "not measured: off until benchmarks/plugins/kernels.py shows it faster"
    return bool(entry.get("on", False)), str(entry.get("reason", ""))
