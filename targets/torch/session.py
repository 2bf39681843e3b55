"""Eager (or torch.compile'd) PyTorch modules behind the Session interface."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from vlc.errors import CompileError, InputError, TargetUnavailable
from vlc.model import named_outputs
from vlc.spec import Precision

WEIGHTS = "weights.pt"
MODES = ("eager", "compile")


def torch_dtype(precision: Precision) -> Any:
    import torch

    return {Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}.get(precision, torch.float32)


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise TargetUnavailable("target 'torch' has no CUDA device here (torch.cuda.is_available() is False)",
                                fix="use --device cpu, or run on a machine with a GPU and a CUDA build of torch")


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """TF32 matmul/convolution on for tf32 artifacts and off for fp32 ones, restored afterwards."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch prefers fp32_precision and warns about allow_tf32
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def to_numpy(tensor: Any) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.cpu().numpy()


class TorchSession:
    """Runs `module(*inputs)` in `input_names` order; float inputs are cast to the artifact's dtype."""

    def __init__(self, module: Any, input_names: list[str], output_names: list[str], device: str,
                 precision: Precision):
        self.module = module
        self.input_names = input_names
        self.output_names = output_names
        self.device = device
        self.precision = precision
        self.dtype = torch_dtype(precision)

    def tensors(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        import torch

        args = []
        for name in self.input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).to(self.device)
            if tensor.is_floating_point() and tensor.dtype != self.dtype:
                tensor = tensor.to(self.dtype)
            args.append(tensor)
        return args

    def forward(self, args: list[Any]) -> Any:
        import torch

        with torch.inference_mode(), tf32_mode(self.precision == Precision.TF32):
            return self.module(*args)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.forward(self.tensors(feeds))
        return {name: to_numpy(t) for name, t in named_outputs(out, self.output_names).items()}

    def compute_only(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """A call that runs the module on inputs already on the device (for transfer-free timing)."""
        args = self.tensors(feeds)
        return lambda: self.forward(args)

    def close(self) -> None:
        self.module = None


def load_module(ref: str, weights: Path, device: str, precision: Precision, mode: str) -> Any:
    """Re-create the module from its ref, load the compiled weights, move and cast it."""
    import torch
    from vlc.frontend.loader import load_model
    from vlc.model import ModelSource

    source = load_model(ref)
    if not isinstance(source, ModelSource):
        raise InputError(f"target torch needs a PyTorch model; the artifact's ref '{ref}' is an ONNX file",
                         fix="compile a PyTorch model ref, or use --target onnxruntime")
    module = source.module.eval().to(dtype=torch_dtype(precision))
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"cannot read the weights {weights}: {type(exc).__name__}: {exc}",
                         fix="rebuild the artifact with `vlc compile --force`") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CompileError(f"the weights in {weights} do not fit the model '{ref}' builds now: {first}",
                           fix="the model's code changed; rebuild with `vlc compile --force`") from None
    module = module.to(device)
    if mode == "compile":
        module = torch.compile(module)
    return module
