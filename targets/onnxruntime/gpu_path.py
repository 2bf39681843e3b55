"""What the onnxruntime target does differently on CUDA: its own pass set, fp16 islands that fit
ONNX Runtime's CUDA kernels, and sessions that keep buffers on the GPU (CUDA graphs per shape)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import InputError
from vlc.options import FALSE_WORDS, TRUE_WORDS, boolean, words
from vlc.targets.onnxruntime.cuda_session import OrtCudaSession, cuda_provider
from vlc.targets.onnxruntime.fusions import FUSION_PASSES, UNDONE_BY, apply_fusions  # noqa: F401 - the pass set
from vlc.targets.onnxruntime.session import session_options, with_operators

# ONNX Runtime's CUDA LayerNorm, Softmax and reduction kernels accumulate fp16 in fp32, so on CUDA
# only the overflow-prone elementwise ops stay in fp32 islands (fewer Casts, fusable fp16 chains);
# the shared precision pass's default islands remain for every other target and for the CPU.
CUDA_FP32_OPS: frozenset[str] = frozenset({
    "Pow", "Exp", "Log", "Softplus", "CumSum",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "RandomNormal", "RandomUniform",
    "RandomNormalLike", "RandomUniformLike", "Multinomial", "EyeLike", "NonMaxSuppression",
    "RoiAlign", "STFT", "DFT", "Range",
})

ISLANDS = ("all", "overflow", "auto")  # auto: the shared pass's search from the full set

# ONNX Runtime's attention backends (the CUDA provider's `sdpa_kernel` bit mask); "default" lets
# ONNX Runtime choose per call (cuDNN's flash kernel on the H100 of benchmarks/). One backend is
# not best everywhere there: CUTLASS's was faster for CLIP and slower for ViLBERT.
ATTENTION_KERNELS: dict[str, int] = {"default": 0, "flash": 1, "efficient": 2, "trt-fused": 4,
                                     "cudnn": 8, "math": 16}


# cuDNN's convolution algorithm choice (the CUDA provider's `cudnn_conv_algo_search`). Heuristic is
# the default: on the H100 of benchmarks/ it ran MobileViT-S at batch 32 in 5.6 ms where the
# exhaustive search's picks took 7.5 ms and cuDNN's default algorithms 70 ms
# (benchmarks/results/h100/experiments/mobilevit-s-conv-settings.md).
CONV_ALGO_SEARCH: dict[str, str] = {"heuristic": "HEURISTIC", "exhaustive": "EXHAUSTIVE", "default": "DEFAULT"}


# The functions below read the target's typed options (OnnxRuntimeTarget.parse_options: every
# option present, values parsed and checked); None is "not set", the device decides.

def parse_fusions(value: Any) -> bool | list[str]:
    """-O fusions: true (all), false (none) or a comma list of FUSION_PASSES names (kept in their order)."""
    if isinstance(value, bool) or str(value).strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return boolean(value)
    names = words(value)
    if unknown := [n for n in names if n not in FUSION_PASSES]:
        raise InputError(f"-O fusions names unknown pass(es) {', '.join(unknown)}",
                         fix=f"use true, false or a comma list of {', '.join(FUSION_PASSES)}")
    return [n for n in FUSION_PASSES if n in names]


def fusion_passes(options: Mapping[str, Any], device: str) -> tuple[str, ...]:
    """The passes -O fusions turns on: all by default on CUDA, none by default on the CPU."""
    value = options["fusions"]
    if value is None:
        return FUSION_PASSES if device == "cuda" else ()
    if isinstance(value, bool):
        return FUSION_PASSES if value else ()
    return tuple(n for n in FUSION_PASSES if n in value)


def disabled_optimizers(options: Mapping[str, Any], device: str) -> list[str]:
    """ONNX Runtime optimizers to turn off in sessions of this target's graphs (see UNDONE_BY)."""
    return sorted({name for p in fusion_passes(options, device) for name in UNDONE_BY.get(p, ())})


def conv_algo_search(options: Mapping[str, Any]) -> str:
    """-O conv_algo (heuristic, exhaustive or default) -> cudnn_conv_algo_search."""
    return CONV_ALGO_SEARCH[options["conv_algo"]]


def cuda_graph_on(options: Mapping[str, Any], device: str) -> bool:
    return device == "cuda" and bool(options["cuda_graph"])


def islands_choice(options: Mapping[str, Any], device: str) -> str:
    """-O islands: all, overflow (the default on cuda) or auto."""
    return str(options["islands"] or ("overflow" if device == "cuda" else "all"))


def fp32_islands(options: Mapping[str, Any], device: str) -> frozenset[str] | None:
    """Ops kept in fp32 by the precision pass; None means the shared pass's default set (also
    where islands=auto starts its search)."""
    return CUDA_FP32_OPS if islands_choice(options, device) == "overflow" else None


def cpu_safe_options(options: Mapping[str, Any], device: str, precision: str) -> dict[str, Any]:
    """ONNX Runtime 1.31's CPU layout optimizations (level "all") crash on fp16 graphs whose
    LayerNorm/Softmax stay in fp16 (islands=overflow or auto); cap such CPU sessions at "extended"."""
    options = dict(options)
    if (device == "cpu" and precision in ("fp16", "bf16") and islands_choice(options, device) != "all"
            and options["graph_optimization_level"] == "all"):
        options["graph_optimization_level"] = "extended"
    return options


def attention_kernel(options: Mapping[str, Any]) -> int:
    """The `sdpa_kernel` mask for ONNX Runtime's fused attention operators (0: its own choice)."""
    return ATTENTION_KERNELS[options["attention"]]


class CudaSessions:
    """One ONNX Runtime CUDA session per input shape when CUDA graphs are on (a captured graph
    replays one shape), else a single session; all share the Session interface."""

    def __init__(self, model_path: Path, options: Mapping[str, Any], cuda_graph: bool):
        self.model_path = model_path
        self.options = dict(options)
        self.cuda_graph = cuda_graph
        self.per_operator: Any = None  # feeds -> ONNX Runtime's per-operator profile (set by the target)
        self._sessions: dict[Any, Any] = {}

    def _session_for(self, feeds: Mapping[str, np.ndarray]) -> Any:
        import onnxruntime as ort

        key = tuple(sorted((n, np.shape(a)) for n, a in feeds.items())) if self.cuda_graph else None
        if key not in self._sessions:
            cuda = cuda_provider(self.cuda_graph, attention=attention_kernel(self.options),
                                 conv_algo=conv_algo_search(self.options))
            session = ort.InferenceSession(str(self.model_path), session_options(self.options),
                                           providers=[cuda, "CPUExecutionProvider"],
                                           disabled_optimizers=disabled_optimizers(self.options, "cuda"))
            self._sessions[key] = OrtCudaSession(session, self.cuda_graph)
        return self._sessions[key]

    @property
    def providers(self) -> list[str]:
        return next(iter(self._sessions.values())).providers if self._sessions else []

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._session_for(feeds).run(feeds)

    def end_to_end(self, feeds: Mapping[str, np.ndarray]) -> Any:
        return self._session_for(feeds).end_to_end(feeds)

    def device_resident(self, feeds: Mapping[str, np.ndarray]) -> Any:
        return self._session_for(feeds).device_resident(feeds)

    def profile(self, feeds: Mapping[str, np.ndarray], settings: Any, batch: int) -> Any:
        result = self._session_for(feeds).profile(feeds, settings, batch)
        return with_operators(result, settings, self.per_operator, feeds)

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
