"""int8 sensitivity per node on a CNN with one layer deliberately hard to quantize."""

from __future__ import annotations

from pathlib import Path

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
    """conv1's channel 0 is an outlier (bias 500): a per-tensor int8 scale over conv2's input is
    then so coarse that the other channels round to zero. conv2 ignores channel 0 (zero weights),
    so in float the outlier costs nothing; quantizing conv2's input loses everything else. Later
    biases are zero so that the output follows the signal."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)
        with torch.no_grad():
            self.conv1.weight[0].zero_()
            self.conv1.bias[0] = 500.0
            self.conv2.weight[:, 0].zero_()
            for layer in (self.conv2, self.conv3, self.head):  # outputs follow the signal, not biases
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
