"""The entry point's module: registers the `onnx-reference` target.

vlc imports this module when it lists targets, so it imports neither onnx nor numpy's heavy
users: the target imports onnx inside its methods.
"""

from __future__ import annotations

from collections.abc import Callable

import vlc.hookspecs
from vlc.target import Target
from vlc_example_target.target import OnnxReferenceTarget


@vlc.hookspecs.hookimpl
def register_targets(register: Callable[[Target], None]) -> None:
    register(OnnxReferenceTarget())
