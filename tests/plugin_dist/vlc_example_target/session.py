"""An opened `onnx-reference` artifact: run the interpreter, time it with vlc's host clock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vlc.errors import VlcError, first_line
from vlc.timing import ProfileResult, ProfileSettings, host_profile


class ReferenceSession:
    """Holds one ReferenceEvaluator; outputs come back by the graph's output names."""

    def __init__(self, evaluator: Any) -> None:
        self._evaluator = evaluator
        self.input_names = list(evaluator.input_names)
        self.output_names = list(evaluator.output_names)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._evaluator.run(None, {name: np.asarray(feeds[name]) for name in self.input_names})
        except VlcError:
            raise
        except Exception as exc:  # noqa: BLE001 - the interpreter raises many types; the user gets one line
            raise VlcError(f"onnx's reference interpreter failed while running: {first_line(exc, with_type=True)}",
                           fix="check the inputs' shapes; rerun with --debug for details") from None
        return dict(zip(self.output_names, values))

    def profile(self, feeds: Mapping[str, np.ndarray], settings: ProfileSettings, batch: int) -> ProfileResult:
        """Host arrays in and out, so every call includes what a transfer would be (there is none)."""
        return host_profile(lambda: self.run(feeds), settings, batch, device="cpu", includes_transfers=True)

    def close(self) -> None:
        self._evaluator = None
