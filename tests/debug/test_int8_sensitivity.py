"""int8 sensitivity per node and the int8 plan, on a CNN with one layer deliberately hard to quantize."""

from __future__ import annotations

import pytest

from tests.debug.outlier_cnn import HARD, SPECS, export, feeds
from vlc.accuracy import compare_outputs, default_tolerance
from vlc.debug import plan_int8
from vlc.frontend.precision import convert
from vlc.frontend.precision.calibration import CalibrationData
from vlc.frontend.precision.check import run_onnx
from vlc.frontend.precision.quantize import quantize_int8
from vlc.frontend.precision.sensitivity import int8_sensitivity
from vlc.signature import onnx_signature

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notice


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sensitivity")
    src, qdq = out / "cnn.onnx", out / "cnn.int8.onnx"
    export(src)
    convert(src, "int8", qdq, input_specs=SPECS, strict=False, per_channel=True)
    return src, qdq


def cosine(path, src, data) -> float:
    return compare_outputs(run_onnx(path, data), run_onnx(src, data), default_tolerance("int8")).outputs[0].cosine


def test_the_hard_layer_is_the_most_sensitive(graphs):
    import onnx

    src, qdq = graphs
    conv_names = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Conv"]
    ranked = int8_sensitivity(src, qdq, feeds())
    assert {s.node for s in ranked} >= set(conv_names)
    hardest, *others = ranked
    assert hardest.node == HARD == conv_names[1], [(s.node, s.cosine) for s in ranked]
    assert hardest.cosine < 0.9
    assert all(s.cosine > 0.99 for s in others), [(s.node, s.cosine) for s in others]
    assert hardest.sensitivity > 10 * max(s.sensitivity for s in others)
    assert all(s.flops and s.flops > 0 for s in ranked if s.op_type == "Conv")


def test_the_fp32_graph_is_left_as_it_was(graphs):
    import onnx

    src, qdq = graphs
    before = onnx.load(str(src)).SerializeToString()
    first = int8_sensitivity(src, qdq, feeds(1))
    again = int8_sensitivity(src, qdq, feeds(1))
    assert [(s.node, s.cosine) for s in first] == [(s.node, s.cosine) for s in again]
    assert onnx.load(str(src)).SerializeToString() == before


def test_one_node_spliced_in_matches_quantizing_that_node_alone(graphs, tmp_path):
    """The splice stands for a real int8 build of that one node: ONNX Runtime's quantizer with every
    other node excluded, calibrated on the same data, gives the same outputs."""
    import onnx

    src, qdq = graphs
    nodes = [n.name for n in onnx.load(str(src)).graph.node if n.op_type in ("Conv", "Gemm")]
    alone = tmp_path / "conv2-only.onnx"
    calibration = CalibrationData.generate(SPECS).bind(onnx_signature(src))
    quantize_int8(src, alone, calibration, nodes_to_exclude=[n for n in nodes if n != HARD])
    spliced = next(s for s in int8_sensitivity(src, qdq, feeds()) if s.node == HARD)
    assert spliced.cosine == pytest.approx(cosine(alone, src, feeds()), abs=1e-4)


def test_the_plan_keeps_the_hard_layer_in_float_and_the_rest_in_int8(graphs, tmp_path):
    """The gate fails with every node in int8; the plan excludes only the hard layer, and a real
    build excluding it (ONNX Runtime's quantizer, same calibration) passes the gate too."""
    src, qdq = graphs
    assert cosine(qdq, src, feeds()) < 0.98

    plan = plan_int8(src, qdq, feeds(), min_cosine=0.98)
    assert plan.excluded == [HARD]
    assert set(plan.int8_nodes) == {"/conv1/Conv", "/conv3/Conv", "/head/Gemm"}
    assert plan.cosine >= 0.98 > plan.all_int8_cosine
    flops = {s.node: s.flops for s in int8_sensitivity(src, qdq, feeds())}
    expected = sum(flops[n] for n in plan.int8_nodes) / sum(flops.values())
    assert plan.int8_mac_share == pytest.approx(expected) and 0.3 < plan.int8_mac_share < 0.9
    # all-int8 once, one run per node, the bisection and one retry of the excluded node
    assert plan.runs <= 1 + len(flops) + 3 + 1
    assert [s["node"] for s in plan.sensitivities][0] == HARD

    built = tmp_path / "planned.int8.onnx"
    calibration = CalibrationData.generate(SPECS).bind(onnx_signature(src))
    quantize_int8(src, built, calibration, nodes_to_exclude=plan.excluded)
    real = cosine(built, src, feeds())
    assert real >= 0.98 and real == pytest.approx(plan.cosine, abs=1e-3)


def test_the_plan_takes_the_worst_of_several_feeds(graphs):
    """Measured on two feeds, the plan's cosine is the lower of the two."""
    src, qdq = graphs
    both = plan_int8(src, qdq, [feeds(2, 5), feeds(4, 9)], min_cosine=0.98)
    one = plan_int8(src, qdq, feeds(2, 5), min_cosine=0.98)
    other = plan_int8(src, qdq, feeds(4, 9), min_cosine=0.98)
    assert both.excluded == [HARD]
    assert both.all_int8_cosine == pytest.approx(min(one.all_int8_cosine, other.all_int8_cosine))


def test_a_graph_that_meets_the_gate_keeps_every_node(graphs):
    src, qdq = graphs
    plan = plan_int8(src, qdq, feeds(), min_cosine=cosine(qdq, src, feeds()) - 1e-3)
    assert plan.excluded == [] and plan.int8_mac_share == pytest.approx(1.0) and plan.runs == 1
