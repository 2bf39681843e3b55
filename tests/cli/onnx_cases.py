"""ONNX's own backend test cases (model.onnx + test_data_set_0/{input,output}_N.pb) on disk.

Installed onnx wheels do not ship onnx/backend/test/data/node, so the cases are written from
onnx.backend.test.case.node, the code that generates that directory, in the same layout.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

CASES = ("test_conv_with_strides_padding", "test_gemm_default_matrix_bias", "test_gemm_default_no_bias",
         "test_relu", "test_softmax_axis_1", "test_matmul_2d")

_SHIPPED = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"


def write_cases(root: Path, names: tuple[str, ...] = CASES) -> dict[str, Path]:
    """{name: case directory}; from the onnx package's data when shipped, else generated."""
    if all((_SHIPPED / n / "model.onnx").is_file() for n in names):
        return {n: _SHIPPED / n for n in names}
    from onnx.backend.test.case.node import collect_testcases

    wanted = set(names)
    found = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # other cases' deliberate overflows
        warnings.simplefilter("ignore")
        every_case = collect_testcases(None)
    for case in every_case:
        if case.name not in wanted:
            continue
        folder = root / case.name
        data = folder / "test_data_set_0"
        data.mkdir(parents=True, exist_ok=True)
        (folder / "model.onnx").write_bytes(case.model.SerializeToString())
        inputs, outputs = case.data_sets[0]
        for i, (value, array) in enumerate(zip(case.model.graph.input, inputs)):
            (data / f"input_{i}.pb").write_bytes(numpy_helper.from_array(array, value.name).SerializeToString())
        for i, (value, array) in enumerate(zip(case.model.graph.output, outputs)):
            (data / f"output_{i}.pb").write_bytes(numpy_helper.from_array(array, value.name).SerializeToString())
        found[case.name] = folder
    missing = wanted - set(found)
    assert not missing, f"onnx no longer has the backend test cases {sorted(missing)}"
    return found
