"""All terminal output goes through here: rich tables and progress for people, JSON for scripts."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from vlc.report.format import fmt

__all__ = ["out", "err", "state", "escape", "emit_json", "info", "table", "fmt", "progress", "log",
           "set_verbosity"]


def _console(stderr: bool) -> Console:
    # Markup is off by default: paths, model and machine names and exception text are printed as
    # given ('out[red]y', 'nope[/]x.onnx'). A caller that styles text passes markup=True and
    # escape()s what it interpolates.
    console = Console(stderr=stderr, soft_wrap=True, markup=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # logs and CI: keep statistics tables readable
    return console


out = _console(stderr=False)
err = _console(stderr=True)


class State:
    debug: bool = False
    json: bool = False
    verbosity: int = 0  # -1 quiet (-q), 0 normal, 1 verbose (-v), 2 and more: debug (-vv)


state = State()

# vlc's own logger: library code logs its steps and choices here; `vlc -v` shows INFO, `-vv`
# DEBUG, on stderr. Notes and progress for people go through info() and progress() below.
log = logging.getLogger("vlc")
_LEVELS = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}


class _ErrHandler(logging.Handler):
    """Writes records through the stderr console, so they interleave with progress cleanly."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            err.print(f"{record.levelname.lower()}: {self.format(record)}", highlight=False, markup=False)
        except Exception:  # noqa: BLE001  logging must never take the command down
            self.handleError(record)


_handler = _ErrHandler()
log.addHandler(_handler)
log.propagate = False  # the root logger's handlers (pytest's, a notebook's) stay untouched


def set_verbosity(level: int) -> None:
    """-q (-1), normal (0), -v (1), -vv (2): the level of the `vlc` logger and whether notes show."""
    state.verbosity = level
    log.setLevel(_LEVELS.get(level, logging.DEBUG))


set_verbosity(0)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def info(text: str, *, markup: bool = False) -> None:
    """Progress notes go to stderr so --json output on stdout stays parseable; -q hides them."""
    if state.verbosity >= 0:
        err.print(text, highlight=False, markup=markup)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(fmt(v) for v in r))
    out.print(t)


@contextmanager
def progress(description: str) -> Iterator[Progress]:
    """A transient spinner on stderr for steps that take more than a few seconds."""
    log.info(description)  # -v: the step's name also when stderr is not a terminal
    with Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                  TimeElapsedColumn(), console=err, transient=True,
                  disable=not err.is_terminal or state.verbosity < 0) as bar:
        bar.add_task(description, total=None)
        yield bar
