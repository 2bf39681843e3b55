"""Deliberately wrong copies of graphs for the debugger's tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def corrupt_weight(src: Path, dst: Path, op_type: str, pick: Callable[[list[Any]], Any]) -> str:
    """A copy of `src` whose chosen `op_type` node reads its weight with its values shifted by one
    place (same shape, wrong values); returns the node's name. The wrong weight is a new
    initializer, so layers sharing one weight keep theirs."""
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type == op_type and n.input[1] in inits]
    node = pick(weighted)
    array = numpy_helper.to_array(inits[node.input[1]])
    wrong = f"{node.input[1]}__corrupted"
    model.graph.initializer.append(numpy_helper.from_array(np.roll(array.reshape(-1), 1).reshape(array.shape), wrong))
    node.input[1] = wrong
    onnx.save(model, str(dst))
    return node.name
