"""What the onnxruntime target does differently on CUDA: its own pass set, fp16 islands that fit
ONNX Runtime's CUDA kernels, and sessions that keep buffers on the GPU (CUDA graphs per shape)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import InputError

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


TRUE_WORDS = ("1", "true", "on", "yes")
FALSE_WORDS = ("0", "false", "off", "no")


def option_bool(options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = options.get(name, default)
    if isinstance(value, bool):
        return value
    if str(value).lower() in TRUE_WORDS:
        return True
    if str(value).lower() in FALSE_WORDS:
        return False
    raise InputError(f"-O {name}={value} is not a boolean", fix=f"use -O {name}=true or -O {name}=false")


# The onnxruntime target's own graph passes, in the order they run: onnxscript's ONNX Runtime
# fusions (attention, skip-LayerNorm, GELU) and vlc's rewrites for the CUDA kernels (cuda_rewrites.py).
FUSION_PASSES = ("patch-matmul", "conv-bias-add", "ort-fusions", "qkv-attention")

# ONNX Runtime graph optimizers that would undo a pass of this set; sessions of graphs that had the
# pass turn them off (ConvAddFusion folds conv-bias-add's Add back into the Conv).
UNDONE_BY: dict[str, tuple[str, ...]] = {"conv-bias-add": ("ConvAddFusion",)}

# cuDNN's convolution algorithm choice (the CUDA provider's `cudnn_conv_algo_search`). Heuristic is
# the default: on the H100 of benchmarks/ it ran MobileViT-S at batch 32 in 5.6 ms where the
# exhaustive search's picks took 7.5 ms and cuDNN's default algorithms 70 ms
# (benchmarks/results/h100/experiments/mobilevit-s-conv-settings.md).
CONV_ALGO_SEARCH: dict[str, str] = {"heuristic": "HEURISTIC", "exhaustive": "EXHAUSTIVE", "default": "DEFAULT"}


def fusion_passes(spec_options: Mapping[str, Any], device: str) -> tuple[str, ...]:
    """-O fusions: true (all; the default on CUDA), false (none; the default on the CPU) or a list."""
    value = spec_options.get("fusions")
    if value is None:
        return FUSION_PASSES if device == "cuda" else ()
    if isinstance(value, bool) or str(value).lower() in TRUE_WORDS + FALSE_WORDS:
        return FUSION_PASSES if option_bool(spec_options, "fusions", False) else ()
    names = [n.strip() for n in str(value).split(",") if n.strip()]
    unknown = [n for n in names if n not in FUSION_PASSES]
    if unknown:
        raise InputError(f"-O fusions names unknown pass(es) {', '.join(unknown)}",
                         fix=f"use true, false or a comma list of {', '.join(FUSION_PASSES)}")
    return tuple(n for n in FUSION_PASSES if n in names)


def disabled_optimizers(spec_options: Mapping[str, Any], device: str) -> list[str]:
    """ONNX Runtime optimizers to turn off in sessions of this target's graphs (see UNDONE_BY)."""
    return sorted({name for p in fusion_passes(spec_options, device) for name in UNDONE_BY.get(p, ())})


def conv_algo_search(spec_options: Mapping[str, Any]) -> str:
    """-O conv_algo: heuristic (default), exhaustive or default -> cudnn_conv_algo_search."""
    choice = str(spec_options.get("conv_algo", "heuristic")).lower()
    if choice not in CONV_ALGO_SEARCH:
        raise InputError(f"-O conv_algo={choice} is not one of {', '.join(CONV_ALGO_SEARCH)}",
                         fix="use -O conv_algo=heuristic, exhaustive or default")
    return CONV_ALGO_SEARCH[choice]


def cuda_graph_on(spec_options: Mapping[str, Any], device: str) -> bool:
    wanted = option_bool(spec_options, "cuda_graph", True)  # checked on every device
    return device == "cuda" and wanted


def islands_choice(spec_options: Mapping[str, Any], device: str) -> str:
    """-O islands: all, overflow (the default on cuda) or auto."""
    choice = spec_options.get("islands", "overflow" if device == "cuda" else "all")
    if choice not in ISLANDS:
        raise InputError(f"-O islands={choice} is not one of {', '.join(ISLANDS)}",
                         fix="use -O islands=all (every sensitive op in fp32), -O islands=overflow or "
                             "-O islands=auto (the fewest fp32 nodes that meet -O accuracy)")
    return str(choice)


def fp32_islands(spec_options: Mapping[str, Any], device: str) -> frozenset[str] | None:
    """Ops kept in fp32 by the precision pass; None means the shared pass's default set (also
    where islands=auto starts its search)."""
    return CUDA_FP32_OPS if islands_choice(spec_options, device) == "overflow" else None


def cpu_safe_options(options: Mapping[str, Any], device: str, precision: str) -> dict[str, Any]:
    """ONNX Runtime 1.31's CPU layout optimizations (level "all") crash on fp16 graphs whose
    LayerNorm/Softmax stay in fp16 (islands=overflow or auto); cap such CPU sessions at "extended"."""
    options = dict(options)
    if (device == "cpu" and precision in ("fp16", "bf16") and islands_choice(options, device) != "all"
            and options.get("graph_optimization_level", "all") == "all"):
        options["graph_optimization_level"] = "extended"
    return options


def attention_kernel(spec_options: Mapping[str, Any]) -> int:
    """The `sdpa_kernel` mask for ONNX Runtime's fused attention operators (0: its own choice)."""
    choice = str(spec_options.get("attention", "default"))
    if choice not in ATTENTION_KERNELS:
        raise InputError(f"-O attention={choice} is not one of {', '.join(ATTENTION_KERNELS)}",
                         fix="use -O attention=default, or name one backend, e.g. -O attention=flash")
    return ATTENTION_KERNELS[choice]


def check_gpu_options(options: Mapping[str, Any], device: str) -> None:
    fusion_passes(options, device)
    cuda_graph_on(options, device)
    fp32_islands(options, device)
    attention_kernel(options)
    conv_algo_search(options)
    option_bool(options, "strict_precision", True)


def apply_fusions(onnx_path: Path, passes: tuple[str, ...]) -> dict[str, int]:
    """Rewrite the artifact's graph in place with the named passes; how often each rule fired."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common_passes
    from onnxscript.rewriter import pattern

    from vlc.frontend.builtin_passes import ort_fusions_counted
    from vlc.frontend.export import save_model
    from vlc.onnx_files import external_data_files
    from vlc.targets.onnxruntime.cuda_rewrites import RULES

    before = external_data_files(onnx_path)
    model = ir.load(str(onnx_path))
    counts: dict[str, int] = {}
    for name in passes:
        if name == "ort-fusions":
            model, fused = ort_fusions_counted(model)
            counts.update(fused)
        else:
            common_passes.ShapeInferencePass()(model)  # the rules match on static dims
            fired = pattern.RewriteRuleSet(list(RULES[name])).apply_to_model(model)
            if fired:
                counts[name] = int(fired)
            common_passes.RemoveUnusedNodesPass()(model)
    save_model(model, onnx_path)
    for sidecar in set(before) - set(external_data_files(onnx_path)):
        sidecar.unlink()  # data the rewritten graph no longer references
    return counts


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

        from vlc.targets.onnxruntime.cuda_session import OrtCudaSession, cuda_provider
        from vlc.targets.onnxruntime.session import session_options

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
        from vlc.targets.onnxruntime.session import with_operators

        result = self._session_for(feeds).profile(feeds, settings, batch)
        return with_operators(result, settings, self.per_operator, feeds)

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
