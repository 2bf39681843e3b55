"""Polygraphy's log (and TensorRT's, which Polygraphy's ILogger forwards to it) into build.log.

Polygraphy's loaders log through its global G_LOGGER, and TensorRT's messages reach it through
Polygraphy's own ILogger (backend/trt/util.py: TensorRT VERBOSE -> extra_verbose, INFO ->
verbose, WARNING -> warning, ERROR -> error). For the length of a build vlc turns on G_LOGGER's
documented Python-logging mode at its most verbose TensorRT level and takes the records with a
handler: every message goes to build.log (nothing to the terminal), errors are kept for the
one-line error, and the builder's "Layers:" report for layers.json.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# G_LOGGER severities as Python levels (its python-logging mode maps EXTRA_VERBOSE 0 to 6)
_LETTERS = ((50, "!"), (40, "E"), (30, "W"), (20, "I"), (10, "V"), (6, "X"))


def _letter(level: int) -> str:
    return next((letter for floor, letter in _LETTERS if level >= floor), "U")


class BuildLog(logging.Handler):
    """Appends every record to build.log; keeps errors and the builder's layer report."""

    def __init__(self, path: Path) -> None:
        super().__init__(level=1)
        self.errors: list[str] = []
        self.layers_text: str | None = None
        # line-buffered: vlc's own "[vlc]" lines (BuildDir.log, its own appends) stay in order
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= 40:
            self.errors.append(text)
        if text.startswith("Layers:\n"):
            self.layers_text = text
        self._file.write(f"[{_letter(record.levelno)}] {text}\n")

    def close(self) -> None:
        self._file.close()
        super().close()


@contextlib.contextmanager
def captured(logger: Any, path: Path) -> Iterator[BuildLog]:
    """Within the block, Polygraphy's G_LOGGER (`logger`) writes only to `path`; restored after."""
    handler = BuildLog(path)
    python_logger = logging.getLogger("Polygraphy")
    saved = (logger.module_severity, logger.use_python_logging_system, logger.letter, logger.colors,
             logger.once_logged, logger.logging_indent)
    saved_python = (python_logger.level, python_logger.propagate)
    logger.module_severity = logger.EXTRA_VERBOSE  # TensorRT's VERBOSE messages
    logger.use_python_logging_system = True
    logger.letter, logger.colors = False, False  # the handler writes the severity itself
    logger.once_logged = set()  # warnings logged "once" are logged once per build
    logger.logging_indent = 0
    python_logger.setLevel(1)
    python_logger.propagate = False
    python_logger.addHandler(handler)
    try:
        yield handler
    finally:
        python_logger.removeHandler(handler)
        python_logger.setLevel(saved_python[0])
        python_logger.propagate = saved_python[1]
        (logger.module_severity, logger.use_python_logging_system, logger.letter, logger.colors,
         logger.once_logged, logger.logging_indent) = saved
        handler.close()
