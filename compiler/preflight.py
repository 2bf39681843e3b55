"""Pre-flight reports: what a target's compiler would reject in a graph, before compiling it.

A target that declares `Capabilities(preflight=True)` returns a CheckReport from
`Target.preflight`; `vlc check` prints any target's report the same way. Each finding names the
node, what the compiler would do with it and the patch vlc applies automatically (or what the
user can do when no patch can); `after` holds the findings on the graph with those patches
applied, so what vlc promises to fix is shown fixed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass
class Finding:
    severity: str
    code: str
    message: str
    node: str | None = None
    op_type: str | None = None
    fix: str | None = None  # the patch that fixes it automatically
    hint: str | None = None  # what the user can do when no patch can

    @property
    def blocking(self) -> bool:
        return self.severity == ERROR and self.fix is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    target: str
    findings: list[Finding]
    patches: list[str]  # what vlc applies to the graph before the compiler sees it
    after: list[Finding] | None = None  # findings on the patched graph (None: not patched)
    patch_error: str | None = None
    notes: list[str] = field(default_factory=list)
    compiler: str = "the compiler"  # who is checked for: "ATC"
    context: str = ""  # what the check was made against, for the title: "Ascend310P3, CANN 8"
    facts: dict[str, Any] = field(default_factory=dict)  # the same as data, in the JSON

    @property
    def remaining(self) -> list[Finding]:
        """What still stops the compiler after vlc's own fixes."""
        if self.patch_error is not None:
            return [f for f in self.findings if f.severity == ERROR]
        source = self.findings if self.after is None else self.after
        return [f for f in source if f.severity == ERROR and (self.after is not None or f.fix is None)]

    @property
    def ok(self) -> bool:
        return not self.remaining

    @property
    def title(self) -> str:
        return f"pre-flight: {self.target}" + (f" {self.context}" if self.context else "")

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, **self.facts, "compiler": self.compiler,
                "ok": self.ok, "patches": self.patches,
                "findings": [f.to_json() for f in self.findings],
                "after_patches": None if self.after is None else [f.to_json() for f in self.after],
                "patch_error": self.patch_error, "notes": self.notes}
