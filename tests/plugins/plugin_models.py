"""A tiny model with every plugin pattern, exported the ways vlc meets ONNX, plus ORT helpers."""

from __future__ import annotations

import io
import warnings

import numpy as np

# (exporter, opset): TorchScript below 17 decomposes LayerNorm; 17 and dynamo 18 emit
# LayerNormalization; both place GELU's 0.5 differently.
EXPORTS = [("torchscript", 13), ("torchscript", 17), ("dynamo", 18)]
# One SiLU, an erf GELU, a tanh GELU, a LayerNorm with bias and one without.
EXPECTED_FUSED = {"silu": 1, "gelu": 2, "layernorm": 2}
D = 16


def make_model():
    import torch
    import torch.nn.functional as F

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(D, D)
            self.ln = torch.nn.LayerNorm(D)
            self.ln2 = torch.nn.LayerNorm(D, bias=False)

        def forward(self, x):
            h = F.silu(self.fc(x))
            h = F.gelu(self.ln(h))
            h = self.ln2(h) + F.gelu(x, approximate="tanh")
            # look-alikes that must not fuse: QuickGELU, and Sigmoid of another tensor
            return h + x * torch.sigmoid(1.702 * x) + h * torch.sigmoid(x)

    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():  # non-degenerate LayerNorm parameters (not ones/zeros)
        for ln in (model.ln, model.ln2):
            ln.weight.uniform_(0.5, 1.5)
            if ln.bias is not None:
                ln.bias.uniform_(-0.5, 0.5)
    return model


def export(exporter: str, opset: int):
    import onnx
    import torch

    model = make_model()
    x = torch.randn(2, 5, D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            return torch.onnx.export(model, (x,), dynamo=True, opset_version=opset,
                                     input_names=["x"], verbose=False).model_proto
        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
        return onnx.load_from_string(buf.getvalue())


def feeds(batch: int = 2, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": (rng.standard_normal((batch, 5, D)) * 2.0).astype(np.float32)}


def run_ort(model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def op_types(model) -> list[str]:
    return [f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in model.graph.node]


