"""PyTorch modules behind the Session interface: eager, or torch.compile'd per input shape.

A compiled mode is what a user who tuned PyTorch for a fixed batch size would run: one
`torch.compile(module, mode=..., dynamic=False)` per input shape (static shapes, so inductor
specialises every kernel to the batch), compiled and warmed up before anything is timed, kept
in the session for the next call of that shape.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import CompileError, InputError, TargetUnavailable
from vlc.frontend.loader import load_model
from vlc.model import ModelSource, named_outputs
from vlc.spec import Precision
from vlc.timing import ProfileResult, ProfileSettings, host_profile

WEIGHTS = "weights.pt"
# -O mode -> torch.compile's mode (None: eager). reduce-overhead replays CUDA graphs;
# max-autotune autotunes matrix-product and convolution kernels (and replays CUDA graphs on a GPU).
COMPILE_MODES: dict[str, str | None] = {"eager": None, "compile": "default",
                                        "reduce-overhead": "reduce-overhead", "max-autotune": "max-autotune"}
MODES = tuple(COMPILE_MODES)
CUDA_ONLY_MODES = ("reduce-overhead",)  # CUDA graphs: inductor has no CPU equivalent
PRIME_CALLS = 3  # compile, CUDA-graph warm-up, CUDA-graph recording: all before the first timed call
# dynamo stops compiling a function after this many recompilations and silently runs it eagerly;
# every batch size (and precision) of a sweep in one process is one, so the default 8 is too few
RECOMPILE_LIMIT = 64


def torch_dtype(precision: Precision) -> Any:
    import torch

    return {Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}.get(precision, torch.float32)


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise TargetUnavailable("target 'torch' has no CUDA device here (torch.cuda.is_available() is False)",
                                fix="use --device cpu, or run on a machine with a GPU and a CUDA build of torch")


def check_mode(mode: Any, device: str) -> str:
    """The -O mode value, or one line saying what is wrong with it."""
    if mode not in COMPILE_MODES:
        raise InputError(f"-O mode={mode} is not one of {', '.join(MODES)}",
                         fix="use -O mode=eager, compile, reduce-overhead or max-autotune")
    if mode in CUDA_ONLY_MODES and device != "cuda":
        raise InputError(f"-O mode={mode} needs --device cuda (it replays CUDA graphs)",
                         fix="use --device cuda, or -O mode=compile or max-autotune on the CPU")
    return str(mode)


class _BackendFlags:
    """TF32 and cuDNN autotuning, set once for the session's lifetime and restored at close,
    so that no timed call toggles global state."""

    def __init__(self, device: str, precision: Precision):
        import torch

        self.saved: tuple[bool, bool, bool] | None = None
        if device != "cuda":
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # newer torch prefers fp32_precision and warns about allow_tf32
            self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                          torch.backends.cudnn.benchmark)
            tf32 = precision == Precision.TF32  # fp32 stays true fp32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            # shapes are static per call site: let cuDNN time its algorithms once per shape
            torch.backends.cudnn.benchmark = True

    def restore(self) -> None:
        import torch

        if self.saved is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark) = self.saved
        self.saved = None


def to_numpy(tensor: Any) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.cpu().numpy()


ShapeKey = tuple[tuple[tuple[int, ...], str], ...]


def shape_key(args: list[Any]) -> ShapeKey:
    """What a static-shape compilation is specialised to: every input's shape and dtype."""
    return tuple((tuple(a.shape), str(a.dtype)) for a in args)


class TorchSession:
    """Runs `module(*inputs)` in `input_names` order; float inputs are cast to the artifact's dtype.

    In a compiled mode each input shape gets its own `torch.compile(..., dynamic=False)`,
    compiled on its first call and kept in `compiled`."""

    def __init__(self, module: Any, input_names: list[str], output_names: list[str], device: str,
                 precision: Precision, mode: str = "eager"):
        self.module = module
        self.input_names = input_names
        self.output_names = output_names
        self.device = device
        self.precision = precision
        self.mode = check_mode(mode, device)
        self.dtype = torch_dtype(precision)
        self.compiled: dict[ShapeKey, Any] = {}
        self.compile_seconds: dict[ShapeKey, float] = {}
        self._flags = _BackendFlags(device, precision)
        if self.compiles:
            _raise_recompile_limit()

    def tensors(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        import torch

        args = []
        for name in self.input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).to(self.device)
            if tensor.is_floating_point() and tensor.dtype != self.dtype:
                tensor = tensor.to(self.dtype)
            args.append(tensor)
        return args

    @property
    def compiles(self) -> bool:
        return COMPILE_MODES[self.mode] is not None

    def callable_for(self, args: list[Any]) -> Callable[..., Any]:
        """The module, or its compiled form for these inputs' shapes (made on first use; it
        compiles on its first call)."""
        if not self.compiles:
            return self.module
        key = shape_key(args)
        if key not in self.compiled:
            import torch

            self.compiled[key] = torch.compile(self.module, mode=COMPILE_MODES[self.mode], dynamic=False)
        return self.compiled[key]

    def _call(self, args: list[Any]) -> Any:
        fn = self.callable_for(args)
        key = shape_key(args)
        if not self.compiles or key in self.compile_seconds:
            return fn(*args)
        start = time.perf_counter()  # the first call of a shape compiles: keep how long it took
        out = fn(*args)
        self._sync()
        self.compile_seconds[key] = time.perf_counter() - start
        return out

    def _sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self._call(self.tensors(feeds))
            # copied to the host before the next call can overwrite a CUDA graph's output buffers
            return {name: to_numpy(t) for name, t in named_outputs(out, self.output_names).items()}

    def compute_only(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """A call that runs the module on inputs already on the device (for transfer-free timing);
        the caller holds torch.inference_mode around its loop."""
        args = self.tensors(feeds)
        fn = self.callable_for(args)
        return lambda: fn(*args)

    def profile(self, feeds: Mapping[str, np.ndarray], settings: ProfileSettings, batch: int) -> ProfileResult:
        """Latency at one batch size, timed by the host clock (synchronised after each call on a
        GPU); compiled and warmed up before timing. Without transfers the inputs stay on the GPU."""
        import torch

        transfers = settings.include_transfers or self.device == "cpu"
        with torch.inference_mode():  # once around the loop, not per call
            args = self.tensors(feeds)
            self._call(args)  # compiles this shape (and keeps how long it took) outside the samples
            if transfers:
                call: Callable[[], Any] = functools.partial(self.run, feeds)
            else:
                call = functools.partial(self.callable_for(args), *args)
            for _ in range(PRIME_CALLS):  # CUDA graphs are recorded on the second or third call
                call()
            self._sync()
            sync = self._sync if self.device == "cuda" else None
            result = host_profile(call, settings, batch, device=self.device, includes_transfers=transfers,
                                  sync=sync)
        result.extra.update(self._profile_facts(shape_key(args), transfers))
        return result

    def _profile_facts(self, key: ShapeKey, transfers: bool) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "torch_mode": self.mode,
            "inputs": ("host arrays, copied in and out in every call" if transfers
                       else "on the GPU before timing; outputs left there")}
        if self.compiles:
            facts.update({"torch_compile_mode": COMPILE_MODES[self.mode], "dynamic": False,
                          "compile_seconds": round(self.compile_seconds.get(key, 0.0), 3)})
        if self.device == "cuda":
            facts["cudnn_benchmark"] = True
        return facts

    def close(self) -> None:
        self.compiled.clear()
        self.module = None
        self._flags.restore()


def _raise_recompile_limit() -> None:
    import torch._dynamo

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the name changed in torch 2.6
        if hasattr(config, name) and getattr(config, name) < RECOMPILE_LIMIT:
            setattr(config, name, RECOMPILE_LIMIT)
            return


def load_module(ref: str, weights: Path, device: str, precision: Precision) -> Any:
    """Re-create the module from its ref, load the compiled weights, move and cast it."""
    import torch

    source = load_model(ref)
    if not isinstance(source, ModelSource):
        raise InputError(f"target torch needs a PyTorch model; the artifact's ref '{ref}' is an ONNX file",
                         fix="compile a PyTorch model ref, or use --target onnxruntime")
    module = source.module.eval().to(dtype=torch_dtype(precision))
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a bad file
        raise InputError(f"cannot read the weights {weights}: {type(exc).__name__}: {exc}",
                         fix="rebuild the artifact with `vlc compile --force`") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CompileError(f"the weights in {weights} do not fit the model '{ref}' builds now: {first}",
                           fix="the model's code changed; rebuild with `vlc compile --force`") from None
    return module.to(device)
