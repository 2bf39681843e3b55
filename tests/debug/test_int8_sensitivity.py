"""int8 sensitivity per node on a CNN with one layer deliberately hard to quantize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from vlc.debug.sensitivity import int8_sensitivity
from vlc.frontend.precision import convert
from vlc.model import InputSpec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notice
SPECS = [InputSpec("image", ("batch", 3, 16, 16), kind="normal", low=0.0, high=1.0)]


class OutlierCNN(nn.Module):
    """conv2's weights hold one outlier per output channel (50, the rest ~0.1), on input channel 0,
    which conv1 makes zero (ReLU of -1): in float the outlier costs nothing, but each channel's int8
    scale is then so coarse that its other weights round to zero. Later biases are zero, so the
    output follows the signal."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)
        with torch.no_grad():
            self.conv1.weight[0].zero_()
            self.conv1.bias[0] = -1.0
            self.conv2.weight[:, 0, 1, 1] = 50.0
            for layer in (self.conv2, self.conv3, self.head):
                layer.bias.zero_()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(image))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("sensitivity")
    src, qdq = out / "cnn.onnx", out / "cnn.int8.onnx"
    torch.onnx.export(OutlierCNN().eval(), (torch.randn(2, 3, 16, 16),), str(src), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}}, dynamo=False,
                      opset_version=17)
    convert(src, "int8", qdq, input_specs=SPECS, strict=False, per_channel=True)
    return src, qdq


def test_the_hard_layer_is_the_most_sensitive(graphs):
    import onnx

    src, qdq = graphs
    names = {n.op_type + str(i): n.name for i, n in enumerate(onnx.load(str(src)).graph.node)}
    conv_names = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Conv"]
    feeds = {"image": np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    ranked = int8_sensitivity(src, qdq, feeds)
    assert {s.node for s in ranked} >= set(conv_names), names
    hardest, *others = ranked
    assert hardest.node == conv_names[1], [(s.node, s.cosine) for s in ranked]
    assert hardest.cosine < 0.9
    assert all(s.cosine > 0.99 for s in others), [(s.node, s.cosine) for s in others]
    assert hardest.sensitivity > 10 * max(s.sensitivity for s in others)
    assert all(s.flops and s.flops > 0 for s in ranked if s.op_type == "Conv")


def test_the_fp32_graph_is_left_as_it_was(graphs):
    import onnx

    src, qdq = graphs
    before = onnx.load(str(src)).SerializeToString()
    feeds = {"image": np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    first = int8_sensitivity(src, qdq, feeds)
    again = int8_sensitivity(src, qdq, feeds)
    assert [(s.node, s.cosine) for s in first] == [(s.node, s.cosine) for s in again]
    assert onnx.load(str(src)).SerializeToString() == before


def test_one_node_spliced_in_matches_quantizing_that_node_alone(graphs, tmp_path):
    """The splice stands for a real int8 build of that one node: ONNX Runtime's quantizer with every
    other node excluded, calibrated on the same data, gives the same outputs."""
    import onnx
    from vlc.accuracy import compare_outputs, default_tolerance
    from vlc.frontend.precision.calibration import CalibrationData
    from vlc.frontend.precision.quantize import quantize_int8
    from vlc.measure import onnx_cpu_outputs
    from vlc.signature import onnx_signature

    src, qdq = graphs
    nodes = [n.name for n in onnx.load(str(src)).graph.node if n.op_type in ("Conv", "Gemm")]
    alone = tmp_path / "conv2-only.onnx"
    calibration = CalibrationData.generate(SPECS).bind(onnx_signature(src))
    quantize_int8(src, alone, calibration, nodes_to_exclude=[n for n in nodes if n != "/conv2/Conv"])
    feeds = {"image": np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    built = compare_outputs(onnx_cpu_outputs(alone, feeds), onnx_cpu_outputs(src, feeds),
                            default_tolerance("int8")).outputs[0].cosine
    spliced = next(s for s in int8_sensitivity(src, qdq, feeds) if s.node == "/conv2/Conv")
    assert spliced.cosine == pytest.approx(built, abs=1e-4)


def test_the_plan_keeps_the_hard_layer_in_float_and_the_rest_in_int8(graphs, tmp_path):
    """The gate fails with every node in int8; the plan excludes only the hard layer, and a real
    build excluding it (ONNX Runtime's quantizer, same calibration) passes the gate too."""
    import onnx
    from vlc.accuracy import compare_outputs, default_tolerance
    from vlc.debug import plan_int8
    from vlc.frontend.precision.calibration import CalibrationData
    from vlc.frontend.precision.quantize import quantize_int8
    from vlc.measure import onnx_cpu_outputs
    from vlc.signature import onnx_signature

    src, qdq = graphs
    feeds = {"image": np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    reference = onnx_cpu_outputs(src, feeds)
    all_int8 = compare_outputs(onnx_cpu_outputs(qdq, feeds), reference, default_tolerance("int8")).outputs[0]
    assert all_int8.cosine < 0.98

    plan = plan_int8(src, qdq, feeds, min_cosine=0.98)
    assert plan.excluded == ["/conv2/Conv"]
    assert set(plan.int8_nodes) == {"/conv1/Conv", "/conv3/Conv", "/head/Gemm"}
    assert plan.cosine >= 0.98
    conv_flops = {s.node: s.flops for s in int8_sensitivity(src, qdq, feeds)}
    expected = sum(conv_flops[n] for n in plan.int8_nodes) / sum(conv_flops.values())
    assert plan.int8_flops_share == pytest.approx(expected) and 0.3 < plan.int8_flops_share < 0.9
    assert plan.runs <= len(conv_flops) + 4

    built = tmp_path / "planned.int8.onnx"
    calibration = CalibrationData.generate(SPECS).bind(onnx_signature(src))
    quantize_int8(src, built, calibration, nodes_to_exclude=plan.excluded)
    real = compare_outputs(onnx_cpu_outputs(built, feeds), reference, default_tolerance("int8")).outputs[0]
    assert real.cosine >= 0.98 and real.cosine == pytest.approx(plan.cosine, abs=1e-3)
    assert onnx.load(str(built)) is not None
