"""A small CNN with one layer deliberately hard to quantize (the int8 sensitivity and int8=auto
tests; `vlc compile tests/debug/outlier_cnn.py:factory` loads it as a model file)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vlc.model import BATCH, InputSpec, ModelSource

SPECS = [InputSpec("image", (BATCH, 3, 16, 16), kind="normal", low=0.0, high=1.0)]
HARD = "/conv2/Conv"  # the node the TorchScript exporter names for conv2


class OutlierCNN(nn.Module):
    """conv2's weights hold one outlier per output channel (50, the rest ~0.1), on input channel 0,
    which conv1 makes zero (ReLU of -1): in float the outlier costs nothing, but each channel's int8
    scale is then so coarse that its other weights round to zero. Later biases are zero, so the
    output follows the signal."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
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


def export(path, batch: int = 2) -> None:
    """The TorchScript export the debug tests use (node names /conv1/Conv ... /head/Gemm)."""
    torch.onnx.export(OutlierCNN().eval(), (torch.randn(batch, 3, 16, 16),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}}, dynamo=False,
                      opset_version=17)


def feeds(batch: int = 2, seed: int = 5) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).standard_normal((batch, 3, 16, 16)).astype(np.float32)}


def factory() -> ModelSource:
    return ModelSource(name="outlier-cnn", ref="", module=OutlierCNN().eval(), inputs=list(SPECS),
                       output_names=["logits"], generator=lambda batch, seed: feeds(batch, seed))
