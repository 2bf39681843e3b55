"""One error type for everything a user can get wrong.

Every user-facing failure is a VlcError carrying what went wrong, where, and what to do;
the CLI prints it as one line and exits non-zero (the traceback only with --debug).
"""

from __future__ import annotations


class VlcError(Exception):
    """A failure the user can act on: `what` happened at `where`; `fix` says what to do."""

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        parts = [self.what if self.where is None else f"{self.what} ({self.where})"]
        if self.fix:
            parts.append(self.fix)
        return " — ".join(parts)


class InputError(VlcError):
    """Bad user input: files, names, shapes, dtypes, options."""


class ExportError(VlcError):
    """The model could not be exported or normalized to ONNX."""


class TargetUnavailable(VlcError):
    """The target's SDK or hardware is not present on this machine."""

    exit_code = 3


class CompileError(VlcError):
    """The backend compiler rejected the graph."""


class AccuracyError(VlcError):
    """An accuracy check failed its tolerance."""

    exit_code = 4


def first_line(exc: BaseException, *, limit: int = 300, with_type: bool = False) -> str:
    """An exception as one line for an error message: a VlcError's own line, else the first line
    of its text (prefixed with its type when asked, or when it has no text)."""
    if isinstance(exc, VlcError):
        return exc.line()
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    text = lines[0][:limit]
    return f"{type(exc).__name__}: {text}" if with_type else text
