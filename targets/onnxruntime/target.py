"""The `onnxruntime` target: the normalized graph run by ONNX Runtime (CPU, CUDA, TensorRT EPs)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from vlc.accuracy import default_tolerance
from vlc.artifact import Artifact, BuildDir
from vlc.errors import CompileError, TargetUnavailable, first_line
from vlc.options import cosine, integer, lower_text, non_negative, number, text
from vlc.signature import Signature
from vlc.spec import Precision, TargetSpec
from vlc.target import Availability, CompileSource, OptionInfo, Session, Target
from vlc.targets.onnxruntime.cuda_session import cuda_provider
from vlc.targets.onnxruntime.gpu_path import (
    ATTENTION_KERNELS,
    CONV_ALGO_SEARCH,
    ISLANDS,
    CudaSessions,
    apply_fusions,
    attention_kernel,
    conv_algo_search,
    cpu_safe_options,
    cuda_graph_on,
    disabled_optimizers,
    fp32_islands,
    fusion_passes,
    islands_choice,
    parse_fusions,
)
from vlc.targets.onnxruntime.int8 import INT8_METHODS, INT8_MODES, int8_convert_args, runtime_int8, runtime_line
from vlc.targets.onnxruntime.op_profile import profile_operators
from vlc.targets.onnxruntime.providers import GPU_PROVIDERS, check_providers, choose_providers, parse_providers
from vlc.targets.onnxruntime.session import OPT_LEVELS, OrtSession, copy_graph, external_data_files, session_options

MAIN = "model.onnx"
OPTIMIZED = "model.optimized.onnx"


def positive(value: Any) -> int:
    if (n := integer(value)) < 1:
        raise ValueError("is not a positive integer")
    return n


def share(value: Any) -> float:
    if not 0 <= (x := number(value)) <= 1:
        raise ValueError("is not a share in [0, 1]")
    return x


def check_gpu_used(device: str, used: list[str]) -> None:
    """ONNX Runtime drops a GPU provider it cannot load (missing CUDA/cuDNN libraries) and runs
    on the CPU with only a log line; for --device cuda that is an error, never a silent fallback."""
    if device == "cuda" and not any(p in GPU_PROVIDERS for p in used):
        raise TargetUnavailable(f"onnxruntime could not start a GPU provider and would run on {', '.join(used)}",
                                fix="check the CUDA and cuDNN libraries onnxruntime-gpu needs "
                                    "(rerun with --debug), or use --device cpu")


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    summary = "ONNX Runtime: CPU always; CUDA and TensorRT execution providers where installed"
    devices = ("cpu", "cuda")
    options = {
        "graph_optimization_level": OptionInfo("disable, basic, extended or all", str, "all",
                                               choices=OPT_LEVELS, parse=text),
        "intra_op_threads": OptionInfo("threads inside one operator (0: ONNX Runtime's default)", int, 0,
                                       parse=non_negative),
        "providers": OptionInfo("execution providers in order, e.g. tensorrt,cuda,cpu "
                                "(default: cuda,cpu on --device cuda, else cpu)", list, None,
                                parse=parse_providers),
        "fusions": OptionInfo("graph passes for ONNX Runtime's kernels: true (all), false, or a comma list "
                              "of patch-matmul, conv-bias-add, ort-fusions (attention, skip-LayerNorm, "
                              "GELU), qkv-attention (default: all on cuda, none on cpu)", str, None,
                              parse=parse_fusions),
        "cuda_graph": OptionInfo("capture and replay CUDA graphs, one per input shape (cuda; "
                                 "default on)", bool, True),
        "islands": OptionInfo("fp16/bf16 ops kept in fp32: all (the shared set), overflow (only "
                              "overflow-prone ops; default on cuda) or auto (the fewest nodes of the "
                              "shared set that meet -O accuracy, measured on the check inputs)", str, None,
                              choices=ISLANDS),
        "accuracy": OptionInfo("fp16/bf16/int8: the worst output cosine against fp32 the conversion must "
                               "meet (default: the precision's tolerance); islands=auto's goal", float, None,
                               parse=cosine),
        "attention": OptionInfo("attention backend of the fused attention operators on cuda: default "
                                "(ONNX Runtime's choice), flash, efficient, cudnn, trt-fused or math",
                                str, "default", choices=tuple(ATTENTION_KERNELS)),
        "conv_algo": OptionInfo("how cuDNN picks convolution algorithms on cuda: heuristic, exhaustive "
                                "(time them all) or default", str, "heuristic", choices=tuple(CONV_ALGO_SEARCH),
                                parse=lower_text),
        "calibration": OptionInfo("int8: a directory of .npz feeds (.npy for single-input models) or a dataset "
                                  "script loader.py[:function] whose function (default load_data) returns or "
                                  "yields feeds; default: the model's own input generator", str, None),
        "calibration_method": OptionInfo("int8 ranges per tensor: mse (least squared quantization error), "
                                         "minmax, entropy or percentile (ONNX Runtime's calibrators)", str, "mse",
                                         choices=INT8_METHODS, parse=lower_text),
        "calibration_batches": OptionInfo("int8 without -O calibration: generated calibration samples", int, 16,
                                          parse=positive),
        "int8": OptionInfo("int8 graph: auto (every Conv/MatMul/Gemm quantized; when that misses the tolerance, "
                           "the nodes costing the most accuracy per MAC are kept in float until it is met; the "
                           "manifest lists them and the MAC share left in int8) or all (every one, as it is)",
                           str, "auto", choices=INT8_MODES, parse=lower_text),
        "int8_min_share": OptionInfo("int8=auto: the least share of Conv/MatMul/Gemm MACs to leave in int8; a "
                                     "plan needing more in float is not applied (the all-int8 graph then fails, "
                                     "or is kept with strict_precision=false)", float, 0.5, parse=share),
        "int8_activations": OptionInfo("int8 activations: uint8 (asymmetric, for ONNX Runtime's CPU kernels; "
                                       "default) or int8 (symmetric, as TensorRT takes them; default with the "
                                       "tensorrt provider)", str, None, choices=("uint8", "int8"), parse=lower_text),
        "int8_reduce_range": OptionInfo("int8: 7-bit weights, so that ONNX Runtime's u8 x s8 AVX2 kernels (CPUs "
                                        "without VNNI) cannot saturate (default: on with uint8 activations)",
                                        bool, None),
        "strict_precision": OptionInfo("fail the build when the fp16/int8 graph misses its tolerance against "
                                       "fp32 (false: keep it, the manifest says it failed)", bool, True),
    }

    precisions = (Precision.FP32, Precision.FP16, Precision.INT8)  # fp16/int8: the shared precision pass

    def available(self) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return Availability(False, f"onnxruntime is not installed ({exc}); pip install onnxruntime")
        offered = list(ort.get_available_providers())
        devices = ["cpu"]
        if "CUDAExecutionProvider" in offered:
            devices.append("cuda")
        return Availability(True, versions={"onnxruntime": ort.__version__}, devices=devices)

    def validate_spec(self, spec: TargetSpec, signature: Signature) -> TargetSpec:
        spec = super().validate_spec(spec, signature)  # options typed and checked one by one
        if spec.options["providers"] is not None:  # checks that need the device
            check_providers(spec.device, spec.options["providers"])
        return spec

    def _compile(self, source: CompileSource, spec: TargetSpec, build: BuildDir) -> None:
        import onnxruntime as ort

        providers = choose_providers(spec.device, spec.options["providers"])
        main = build.path / MAIN
        if spec.precision == Precision.FP32:
            copied = copy_graph(source.onnx_path, build.path, MAIN)
            build.log(f"copied {source.onnx_path} -> {MAIN} ({len(copied) - 1} external data file(s))")
        else:
            from vlc.frontend.precision import convert, model_inputs, parse_goal  # local: loads onnx

            islands = fp32_islands(spec.options, spec.device)
            mode, goal = parse_goal("auto" if islands_choice(spec.options, spec.device) == "auto" else None,
                                    spec.options["accuracy"], spec.precision.value)
            inputs: dict[str, Any] = model_inputs(source, spec.precision)
            if spec.precision is Precision.INT8:
                inputs.update(int8_convert_args(source, spec.options, providers))
            if islands is not None:
                inputs["keep_fp32_ops"] = islands
            report = convert(source.onnx_path, spec.precision, main, input_specs=source.input_specs,
                             strict=spec.options["strict_precision"], **inputs,
                             islands=mode, tolerance=goal)
            build.extra["precision"] = report.to_json() if hasattr(report, "to_json") else None
            build.log(f"converted {source.onnx_path} to {spec.precision.value} -> {MAIN}: {report.summary()}")
        passes = fusion_passes(spec.options, spec.device)
        if passes:
            build.extra["fusions"] = apply_fusions(main, passes)
            build.log(f"onnxruntime passes {', '.join(passes)}: {build.extra['fusions'] or 'none matched'}")
        external = bool(external_data_files(main))
        # TensorRT's EP compiles subgraphs that ONNX Runtime cannot serialize: no optimized copy then.
        save_optimized = "TensorrtExecutionProvider" not in providers
        options = session_options(cpu_safe_options(spec.options, spec.device, spec.precision.value),
                                  optimized_path=build.path / OPTIMIZED if save_optimized else None,
                                  external_data=external)
        try:
            session = ort.InferenceSession(str(main), options, providers=providers,
                                           disabled_optimizers=disabled_optimizers(spec.options, spec.device))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types are not importable portably
            raise CompileError(f"onnxruntime rejected the graph: {first_line(exc)}",
                               where=str(source.onnx_path),
                               fix="check the graph with `vlc export`; try -O graph_optimization_level=basic"
                               ) from None
        used = list(session.get_providers())
        if spec.precision is Precision.INT8 and (build.extra.get("precision") or {}).get("int8") is not None:
            feeds = inputs.get("check_feeds") or source.generate_inputs(2, 0)
            runtime = runtime_int8(main, build.path / OPTIMIZED if save_optimized else None, source, session,
                                   feeds, goal or default_tolerance(spec.precision))
            build.extra["precision"]["int8"]["runtime"] = runtime
            build.log(f"int8 here: {runtime_line(runtime)}")
        del session
        check_gpu_used(spec.device, used)
        build.files["main"] = MAIN
        if (build.path / OPTIMIZED).is_file():
            build.files["optimized"] = OPTIMIZED
        build.extra.update({
            "providers_requested": providers, "providers": used,
            "graph_optimization_level": spec.options["graph_optimization_level"],
            "intra_op_threads": spec.options["intra_op_threads"],
            "onnxruntime_version": ort.__version__,
        })
        build.log(f"onnxruntime {ort.__version__}; providers {', '.join(used)}; " + (
            f"optimized model saved as {OPTIMIZED} for inspection" if save_optimized else
            "no optimized model saved (the TensorRT EP's compiled nodes cannot be serialized)"))

    def _open(self, artifact: Artifact) -> Session:
        import onnxruntime as ort

        spec = self.artifact_spec(artifact)
        providers = choose_providers(spec.device, spec.options["providers"])
        per_operator = functools.partial(self._operator_profile, artifact)
        if spec.device == "cuda" and providers[0] == "CUDAExecutionProvider":
            sessions = CudaSessions(artifact.file("main"), spec.options, cuda_graph_on(spec.options, spec.device))
            sessions.per_operator = per_operator
            return sessions
        try:
            session = ort.InferenceSession(str(artifact.file("main")),
                                           session_options(cpu_safe_options(spec.options, spec.device,
                                                                            spec.precision.value)),
                                           providers=providers,
                                           disabled_optimizers=disabled_optimizers(spec.options, spec.device))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types are not importable portably
            raise CompileError(f"onnxruntime cannot open the artifact: {first_line(exc)}",
                               where=str(artifact.path), fix="rebuild it with `vlc compile --force`") from None
        check_gpu_used(spec.device, list(session.get_providers()))
        return OrtSession(session, spec.device, per_operator)

    def _operator_profile(self, artifact: Artifact, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        spec = self.artifact_spec(artifact)
        providers: list[Any] = choose_providers(spec.device, spec.options["providers"])
        if providers[0] == "CUDAExecutionProvider":
            # replays would hide the nodes
            providers[0] = cuda_provider(cuda_graph=False, attention=attention_kernel(spec.options),
                                         conv_algo=conv_algo_search(spec.options))
        options = session_options(cpu_safe_options(spec.options, spec.device, spec.precision.value))
        return profile_operators(artifact.file("main"), options, providers, feeds,
                                 disabled_optimizers=disabled_optimizers(spec.options, spec.device))
