"""islands=auto on a graph whose fp32 needs are known (island_graphs.mixed_graph): the search must
keep exactly the three islands fp16 overflows and release the two it holds."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.frontend.precision.island_graphs import LN_NODES, OVERFLOWING, feeds, mixed_graph
from vlc.accuracy import compare_outputs, default_tolerance
from vlc.errors import InputError
from vlc.frontend.precision import convert, parse_goal
from vlc.frontend.precision.check import emulate_low_precision, run_onnx
from vlc.frontend.precision.islands import ensure_node_names
from vlc.frontend.precision.lowp import TYPE_FIXED_OPS, to_low_precision


def _misses_goal_when_released(model: onnx.ModelProto, kept: set[str], released: str) -> bool:
    """Convert with `kept` minus `released` in fp32 and check it the way the search does."""
    converted, _ = to_low_precision(model, TensorProto.FLOAT16, TYPE_FIXED_OPS, keep_nodes=kept - {released},
                                    layernorm_islands=False)
    actual = run_onnx(emulate_low_precision(converted, TensorProto.FLOAT16), feeds())
    return not compare_outputs(actual, run_onnx(model, feeds()), default_tolerance("fp16")).passed


def test_static_islands_cover_all_five(tmp_path):
    _, stats = to_low_precision(mixed_graph(), TensorProto.FLOAT16)
    assert stats.island_nodes and set(stats.island_nodes[0]) == LN_NODES
    assert {"softmax", "exp", "sum_exp", "sum_sq"} <= set(stats.fp32_nodes)


def test_auto_keeps_exactly_the_overflowing_islands(tmp_path):
    src = tmp_path / "mixed.onnx"
    model = mixed_graph(src)
    out = tmp_path / "mixed.fp16.onnx"
    report = convert(src, "fp16", out, check_feeds=feeds(), islands="auto")
    assert report.passed, report.summary()
    record = report.islands
    assert set(record["chosen"]["units_kept"]) == OVERFLOWING
    assert set(record["must_keep"]) == OVERFLOWING
    assert set(record["released"]) == LN_NODES | {"softmax"}
    assert record["chosen"]["fp32_nodes"] < record["static"]["fp32_nodes"]
    assert record["chosen"]["numbers"]["min_cosine"] >= 0.999
    assert set(record["chosen"]["numbers"]) >= {"min_cosine", "max_abs", "mean_abs", "median_abs",
                                                "max_rel", "mean_rel", "median_rel"}
    search = record["search"]
    assert 0 < search["evaluations"] <= search["max_evaluations"] and search["seconds"] > 0
    assert not search["budget_exhausted"]
    json.dumps(report.to_json())
    # the written graph: the overflowing ops read fp32, the released ones fp16
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    by_name = {n.name: n for n in inferred.graph.node}
    for name in ("exp", "sum_exp", "sum_sq", "add_eps_c"):
        assert types[by_name[name].output[0]] == TensorProto.FLOAT, name
    for name in ("softmax", "ln_pow", "ln_div", "proj_a"):
        assert types[by_name[name].output[0]] == TensorProto.FLOAT16, name
    # minimal: releasing any one kept unit as well misses the goal
    for name in OVERFLOWING:
        assert _misses_goal_when_released(model, OVERFLOWING, name), name


def test_grouped_search_splits_groups_again():
    """Past max_groups units, neighbours are measured together; kept groups are split again."""
    from vlc.frontend.precision.islands import search_islands

    model = mixed_graph()
    reference = run_onnx(model, feeds())
    record = search_islands(model, TensorProto.FLOAT16, feeds(), reference, default_tolerance("fp16"),
                            max_groups=2)
    assert record.groups == 2 and record.static_units == 5
    # both groups hold an overflowing unit, so each misses the goal released whole ...
    assert len(record.sensitivity) == 2 and not any(r["passed"] for r in record.sensitivity)
    # ... and unit by unit the LayerNorm and the Softmax are released all the same
    assert set(record.chosen) == OVERFLOWING
    assert set(record.released) == LN_NODES | {"softmax"}


def test_budget_bounds_the_runs_and_keeps_what_it_did_not_try(tmp_path):
    src = tmp_path / "mixed.onnx"
    mixed_graph(src)
    report = convert(src, "fp16", tmp_path / "b.onnx", check_feeds=feeds(), islands="auto", max_island_runs=4)
    assert report.passed
    search = report.islands["search"]
    assert search["budget_exhausted"] and search["evaluations"] <= 5  # the last run is the chosen graph's
    assert set(report.islands["chosen"]["units_kept"]) >= OVERFLOWING
    assert any("budget" in n for n in report.islands["notes"])


def test_sensitivity_is_measured_per_output(tmp_path):
    src = tmp_path / "mixed.onnx"
    mixed_graph(src)
    report = convert(src, "fp16", tmp_path / "s.onnx", check_feeds=feeds(), islands="auto")
    rows = {tuple(r["nodes"]): r for r in report.islands["sensitivity"]}
    released = [r for r in report.islands["sensitivity"] if r["passed"]]
    # the LayerNorm and the Softmax only feed y_a: their cost shows there, not hidden behind y_b
    assert {tuple(r["nodes"]) for r in released} == {tuple(sorted(LN_NODES, key=_order())), ("softmax",)}
    assert all(0 < r["error_growth"] < 1e-2 for r in released), released
    assert rows[("exp",)]["error_growth"] == "inf" and not rows[("exp",)]["passed"]
    # least sensitive first
    growth = [r["error_growth"] for r in report.islands["sensitivity"]]
    assert growth == sorted(growth, key=lambda g: float("inf") if g == "inf" else g)


def _order():
    position = {n.name: k for k, n in enumerate(mixed_graph().graph.node)}
    return position.__getitem__


def test_a_goal_the_static_islands_miss_releases_nothing(tmp_path):
    src = tmp_path / "mixed.onnx"
    mixed_graph(src)
    report = convert(src, "fp16", tmp_path / "s.onnx", check_feeds=feeds(), islands="auto", strict=False,
                     tolerance=parse_goal("auto", 0.99999999, "fp16")[1])
    assert not report.passed
    assert report.islands["goal"]["min_cosine"] == 0.99999999
    assert report.islands["chosen"]["fp32_nodes"] == report.islands["static"]["fp32_nodes"]
    assert report.islands["released"] == [] and report.islands["search"]["evaluations"] == 1
    assert any("miss the goal already" in n for n in report.islands["notes"])


def test_bf16_has_the_range_to_release_more(tmp_path):
    src = tmp_path / "mixed.onnx"
    mixed_graph(src)
    report = convert(src, "bf16", tmp_path / "bf.onnx", check_feeds=feeds(), islands="auto")
    assert report.passed, report.summary()
    assert report.islands["chosen"]["fp32_nodes"] < report.islands["static"]["fp32_nodes"]
    assert "exp" not in report.islands["must_keep"]  # exp(30) fits bf16


def test_nodes_are_kept_by_name():
    model = mixed_graph()
    _, stats = to_low_precision(model, TensorProto.FLOAT16, TYPE_FIXED_OPS, keep_nodes={"proj_a"},
                                layernorm_islands=False)
    assert stats.fp32_nodes == {"proj_a": "node"}
    assert stats.layernorm_islands == 0


def test_unnamed_nodes_are_named_for_the_search(tmp_path):
    model = mixed_graph()
    dup = onnx.ModelProto.FromString(model.SerializeToString())
    dup.graph.node[2].name = dup.graph.node[1].name  # ONNX Runtime refuses duplicates; ATC lists would be ambiguous
    assert ensure_node_names(dup) == 1 and len({n.name for n in dup.graph.node}) == len(dup.graph.node)
    model.graph.node[0].name = ""
    model.graph.node[13].name = ""  # the Exp, which must stay fp32
    src = tmp_path / "unnamed.onnx"
    onnx.save(model, str(src))
    report = convert(src, "fp16", tmp_path / "u.onnx", check_feeds=feeds(), islands="auto")
    assert report.passed and any("2 unnamed" in n for n in report.islands["notes"])
    assert len(report.islands["chosen"]["units_kept"]) == 3  # the Exp among them, under its new name
    names = [n.name for n in onnx.load(str(tmp_path / "u.onnx")).graph.node]
    assert all(names) and len(set(names)) == len(names)


@pytest.mark.parametrize("islands,accuracy,message", [("maybe", None, "islands=maybe"),
                                                      ("auto", "1.5", "accuracy=1.5"),
                                                      ("auto", "high", "accuracy=high")])
def test_bad_goal_options_are_one_line_errors(islands, accuracy, message):
    with pytest.raises(InputError, match=message):
        parse_goal(islands, accuracy, "fp16")


def test_auto_islands_need_a_low_precision_float_type():
    with pytest.raises(InputError, match="islands=auto chooses the fp32 nodes of an fp16 or bf16"):
        parse_goal("auto", None, "int8")


def test_goal_defaults_to_the_precision_tolerance():
    assert parse_goal("auto", None, "fp16") == ("auto", None)
    mode, goal = parse_goal(None, "0.99", "bf16")
    assert mode == "static" and goal.min_cosine == 0.99 and goal.atol == default_tolerance("bf16").atol


def _two_layernorms(path) -> None:
    """Two native LayerNorms: one on unit-scale values, one on values 500 times larger (whose
    squared deviations, ~1e6, no fp16 kernel could hold, although its output is normalized)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((1 + 0.1 * rng.standard_normal(32)).astype(np.float32), "g"),
             numpy_helper.from_array((0.1 * rng.standard_normal(32)).astype(np.float32), "b"),
             numpy_helper.from_array(np.array(500.0, np.float32), "big")]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["small"], name="ln_small", axis=-1),
             helper.make_node("Mul", ["x", "big"], ["xl"], name="scale_up"),
             helper.make_node("LayerNormalization", ["xl", "g", "b"], ["large"], name="ln_large", axis=-1)]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", 32]) for n in ("small", "large")]
    graph = helper.make_graph(nodes, "lns", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 32])],
                              outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_a_normalization_of_large_values_stays_fp32(tmp_path):
    src = tmp_path / "lns.onnx"
    _two_layernorms(src)
    x = {"x": np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)}
    report = convert(src, "fp16", tmp_path / "lns.fp16.onnx", check_feeds=x, islands="auto")
    assert report.passed
    guarded = report.islands["guarded"]
    assert [g["node"] for g in guarded] == ["ln_large"] and guarded[0]["max_deviation"] > 256
    assert report.islands["chosen"]["units_kept"] == ["ln_large"]
    assert report.islands["released"] == ["ln_small"]
    bf16 = convert(src, "bf16", tmp_path / "lns.bf16.onnx", check_feeds=x, islands="auto")
    assert bf16.islands["guarded"] == [] and bf16.islands["chosen"]["units_kept"] == []  # bf16 has the range
