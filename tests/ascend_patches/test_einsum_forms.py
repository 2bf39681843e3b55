"""ascend-einsum on batched and ellipsis equations, checked numerically in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from ascend_patch_helpers import F, make_model, ops, run, tensor
from onnx import helper

from vlc.ascend_patches import get_patch
from vlc.ascend_patches.einsum import Equation

RNG = np.random.default_rng(13)


def _apply(model):
    result = get_patch("ascend-einsum").run(model)
    return result.model, result.record


def _einsum_model(equation, dims_a, dims_b, out_rank):
    nodes = [helper.make_node("Einsum", ["a", "b"], ["y"], equation=equation)]
    return make_model(nodes, [tensor("a", F, dims_a), tensor("b", F, dims_b)],
                      [tensor("y", F, [None] * out_rank)], opset=13)


@pytest.mark.parametrize("equation,shapes,dynamic", [
    ("...pd,...qd->...pq", [(2, 3, 5, 8), (2, 3, 6, 8)], False),  # attention scores, ellipsis
    ("...pd,...qd->...pq", [(2, 3, 5, 8), (2, 3, 6, 8)], True),  # ... with a dynamic batch
    ("bhid,bhjd->bhij", [(2, 3, 5, 8), (2, 3, 6, 8)], True),
    ("bhij,bhjd->bhid", [(2, 3, 5, 6), (2, 3, 6, 8)], True),
    ("...ij,...jk", [(4, 2, 3), (4, 3, 5)], False),  # implicit output keeps the ellipsis first
    ("...ij,jk->...ik", [(3, 2, 4), (4, 5)], False),  # ellipsis on one side (broadcast)
    ("...d,...d->...", [(2, 3, 8), (2, 3, 8)], False),  # batched dot product
    ("...pd,...qd->...pq", [(1, 3, 5, 8), (2, 3, 6, 8)], False),  # size-1 axis broadcast
])
def test_batched_and_ellipsis_einsum_become_matmul(equation, shapes, dynamic):
    a, b = (RNG.standard_normal(s).astype(np.float32) for s in shapes)
    expected = np.einsum(equation, a, b)
    dims_a, dims_b = list(shapes[0]), list(shapes[1])
    if dynamic:
        dims_a[0], dims_b[0] = "batch", "batch"
    model = _einsum_model(equation, dims_a, dims_b, expected.ndim)
    patched, record = _apply(model)
    assert record.changed == 1 and "Einsum" not in ops(patched), record.notes
    assert set(ops(patched)) <= {"MatMul", "Transpose", "Reshape", "Unsqueeze", "Squeeze",
                                 "Identity", "ReduceSum", "Constant"}
    got = run(patched, {"a": a, "b": b})["y"]
    assert expected.std() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    if dynamic:  # the batch stays dynamic: another batch size runs too
        a3, b3 = (RNG.standard_normal((5,) + s[1:]).astype(np.float32) for s in shapes)
        np.testing.assert_allclose(run(patched, {"a": a3, "b": b3})["y"],
                                   np.einsum(equation, a3, b3), rtol=1e-5, atol=1e-5)


def test_ellipsis_is_spelled_out_right_aligned():
    eq = Equation.parse("...pd,...qd->...pq", (4, 3))
    assert (eq.a, eq.b, eq.out) == ("YZpd", "Zqd", "YZpq")
    assert Equation.parse("...pd,...qd->...pq") is None  # ranks unknown: left as it is


def test_einsum_of_unknown_rank_is_left_alone():
    nodes = [helper.make_node("Einsum", ["a", "b"], ["y"], equation="...pd,...qd->...pq")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", F, None),
                                           helper.make_tensor_value_info("b", F, None)],
                              [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    patched, record = _apply(model)
    assert record.changed == 0 and "Einsum" in ops(patched)
    assert any("known rank" in n for n in record.notes)
