"""Running and profiling an engine through Polygraphy's TrtRunner.

`run()` is Polygraphy's: EngineFromBytes deserializes, TrtRunner binds inputs by name, sets
shapes, allocates outputs through TensorRT's output allocator (so data-dependent output shapes
work), calls execute_async_v3 and copies back. `profile()` times TrtRunner.infer with vlc's one
timing method (vlc.timing: warm-up, then the host clock around each synchronised call). What
Polygraphy has no equivalent for stays vlc's own, on a second execution context of the same
engine: the H2D / GPU compute / D2H breakdown by CUDA events (trtexec's split), enqueue time,
CUDA graphs, and per-layer times through IProfiler.

NOT YET EXECUTED ON GPU HARDWARE (see README.md): written against Polygraphy 0.53's TrtRunner
and the TensorRT 10/11 and TensorRT-RTX 1.7 Python APIs; tests/targets/trt/test_trt_runtime.py
runs it on a supported GPU.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from vlc.artifact import Artifact
from vlc.errors import CompileError, InputError, TargetUnavailable
from vlc.targets.trt.backend import Backend
from vlc.targets.trt.cuda import Gpu
from vlc.targets.trt.pg import polygraphy_for
from vlc.targets.trt.summary import assemble
from vlc.timing import ProfileResult, ProfileSettings, time_host_calls

log = logging.getLogger("vlc")

_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
                 "INT32": "int32", "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}
_NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                 "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}


def _torch_cuda() -> Any:
    try:
        import torch
    except ImportError:
        raise TargetUnavailable("profiling TensorRT engines needs torch (CUDA events, pinned buffers, "
                                "CUDA graphs)", fix="install torch with CUDA support") from None
    if not torch.cuda.is_available():
        raise TargetUnavailable(f"torch {torch.__version__} has no CUDA (a CPU-only build, or no driver)",
                                fix="install a CUDA build of torch to profile engines")
    return torch


class _PolygraphyToVlc(logging.Handler):
    """Polygraphy's messages while a session runs: warnings and errors to vlc's log, the rest at debug."""

    def emit(self, record: logging.LogRecord) -> None:
        log.log(logging.WARNING if record.levelno >= 30 else logging.DEBUG, "polygraphy: %s", record.getMessage())


@contextlib.contextmanager
def routed(logger: Any) -> Iterator[None]:
    """Polygraphy's G_LOGGER into vlc's logger for the block (it prints to stdout otherwise,
    which would break `vlc run --json`)."""
    python_logger = logging.getLogger("Polygraphy")
    handler = _PolygraphyToVlc()
    saved = (logger.use_python_logging_system, logger.module_severity, logger.letter, logger.colors)
    saved_python = (python_logger.propagate, python_logger.level)
    logger.use_python_logging_system = True
    logger.module_severity = logger.WARNING
    logger.letter, logger.colors = False, False  # vlc's log has its own levels
    python_logger.propagate = False
    python_logger.setLevel(1)
    python_logger.addHandler(handler)
    try:
        yield
    finally:
        python_logger.removeHandler(handler)
        python_logger.propagate, _ = saved_python
        python_logger.setLevel(saved_python[1])
        logger.use_python_logging_system, logger.module_severity, logger.letter, logger.colors = saved


def tensor_names(extra: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(ONNX input -> engine input, ONNX output -> engine output) for the names TensorRT changed
    (a Loop-fed input), from the manifest's extra; names not listed are the same on both sides."""
    names = extra.get("trt", {}).get("network_names") or {}
    return dict(names.get("inputs") or {}), dict(names.get("outputs") or {})


def check_profile_shape(name: str, shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]) -> None:
    """vlc's one line for a shape the engine's profile does not cover (before TensorRT's own)."""
    if len(shape) != len(lo) or any(not a <= d <= b for a, d, b in zip(lo, shape, hi)):
        raise InputError(f"input '{name}' shape {list(shape)} is outside the engine's profile "
                         f"{list(lo)}..{list(hi)}", fix="recompile with --shapes or --batch covering this shape")


class TrtSession:
    """A deserialized engine in an activated Polygraphy TrtRunner (its own context and stream)."""

    def __init__(self, artifact: Artifact, backend: Backend, gpu: Gpu) -> None:
        self.backend, self.gpu = backend, gpu
        self.pg = polygraphy_for(backend)
        self.trt = backend.module
        self.to_engine, outputs_to_engine = tensor_names(artifact.manifest.extra)
        self.from_engine = {v: k for k, v in outputs_to_engine.items()}  # engine output -> ONNX name
        with routed(self.pg.logger):
            self._select_device(gpu.index)
            try:
                engine = self.pg.trt.engine_from_bytes(artifact.file("main").read_bytes())
            except self.pg.error:
                raise CompileError(f"{backend.name} {backend.version} could not deserialize the engine",
                                   where=str(artifact.file("main")),
                                   fix="rebuild it with this TensorRT version (`vlc compile --force`)") from None
            self.runner = self.pg.trt.TrtRunner(engine, name="vlc")
            self.runner.activate()
        self.engine = self.runner.engine
        trt = self.trt
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, str] = {}  # engine tensor -> TensorRT dtype name (FLOAT, HALF, ...)
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
            self.dtypes[name] = str(self.engine.get_tensor_dtype(name)).split(".")[-1]
        self.shape_inputs = {n for n in self.inputs if self.engine.is_shape_inference_io(n)}
        # min/opt/max shape of each input in optimization profile 0 (shape tensors: their values)
        self.shape_ranges = {n: tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(n, 0))
                             for n in self.inputs if n not in self.shape_inputs}
        self._events: _EventContext | None = None

    def _select_device(self, index: int) -> None:
        """The runner uses the current CUDA device of Polygraphy's CUDA runtime: make it ours."""
        import ctypes

        from polygraphy import cuda

        self.pg.logger.verbose(f"cudaSetDevice({index})")
        cuda.wrapper().check(cuda.wrapper().handle.cudaSetDevice(ctypes.c_int(index)))

    # ---- feeds -----------------------------------------------------------------------------
    def engine_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Feeds by engine tensor name, in the engine's dtypes, checked against its profile."""
        renamed = {self.to_engine.get(name, name): value for name, value in feeds.items()}
        if missing := sorted(set(self.inputs) - set(renamed)):
            onnx_names = {v: k for k, v in self.to_engine.items()}
            raise InputError(f"missing engine input(s) {', '.join(onnx_names.get(m, m) for m in missing)}",
                             fix=f"the engine takes: {', '.join(onnx_names.get(n, n) for n in self.inputs)}")
        out: dict[str, Any] = {}
        for name in self.inputs:
            array = np.ascontiguousarray(renamed[name])
            if name in self.shape_ranges:
                lo, _, hi = self.shape_ranges[name]
                check_profile_shape(name, tuple(array.shape), lo, hi)
            kind = self.dtypes[name]
            if kind == "BF16":  # numpy has no bfloat16: Polygraphy takes a torch tensor instead
                import torch

                out[name] = torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
            else:
                out[name] = array.astype(_NUMPY_DTYPES.get(kind, array.dtype), copy=False)
        return out

    def _host_outputs(self, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Copies by ONNX output name: TrtRunner reuses its output buffers on the next infer()."""
        result = {}
        for name in self.outputs:
            value = outputs[name]
            if hasattr(value, "detach"):  # a torch tensor (bf16 engines)
                value = value.detach().float().cpu().numpy() if str(value.dtype) == "torch.bfloat16" \
                    else value.detach().cpu().numpy()
            result[self.from_engine.get(name, name)] = np.array(value, copy=True)
        return result

    # ---- run / profile ---------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        prepared = self.engine_feeds(feeds)
        with routed(self.pg.logger):
            try:
                outputs = self.runner.infer(prepared, check_inputs=True)
            except self.pg.error as exc:
                raise CompileError(f"TensorRT failed to run the engine: {str(exc).strip().splitlines()[0]}",
                                   fix="rerun with --debug; see TensorRT's log") from None
        return self._host_outputs(outputs)

    def profile(self, feeds: Mapping[str, np.ndarray], settings: ProfileSettings, batch: int) -> ProfileResult:
        return profile_session(self, feeds, settings, batch, self.gpu.describe())

    def events(self) -> _EventContext:
        if self._events is None:
            self._events = _EventContext(self)
        return self._events

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        with routed(self.pg.logger):
            self.runner.deactivate()


class _EventContext:
    """vlc's own execution context of the session's engine for what Polygraphy does not measure:
    torch CUDA tensors as buffers on a non-default stream, CUDA events around each part."""

    def __init__(self, session: TrtSession) -> None:
        torch = _torch_cuda()
        self.torch, self.session = torch, session
        self.device = torch.device("cuda", session.gpu.index)
        self.context = session.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self.device)
        self.tensors: dict[str, Any] = {}

    def bind(self, feeds: Mapping[str, Any]) -> str | None:
        """Device buffers for the feeds (engine names); None, or why no breakdown is possible."""
        torch, session = self.torch, self.session
        self.tensors = {}
        with torch.cuda.stream(self.stream):
            for name in session.inputs:
                array = np.asarray(feeds[name].float().numpy() if hasattr(feeds[name], "float") else feeds[name])
                dtype = getattr(torch, _TORCH_DTYPES[session.dtypes[name]])
                host = torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
                if name in session.shape_inputs:  # shape tensors live in host memory
                    self.tensors[name] = host.contiguous()
                else:
                    if not self.context.set_input_shape(name, tuple(array.shape)):
                        return f"TensorRT rejected shape {list(array.shape)} for input '{name}'"
                    self.tensors[name] = host.to(self.device)
            for name in session.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    return f"output '{session.from_engine.get(name, name)}' has a data-dependent shape"
                self.tensors[name] = torch.empty(shape, dtype=getattr(torch, _TORCH_DTYPES[session.dtypes[name]]),
                                                 device=self.device)
            for name, tensor in self.tensors.items():
                self.context.set_tensor_address(name, tensor.data_ptr())
        return None

    def execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise CompileError("execute_async_v3 failed", fix="rerun with --debug; see TensorRT's log")

    def close(self) -> None:
        self.stream.synchronize()
        self.tensors.clear()
        del self.context


def _layer_profiler(trt: Any) -> Any:
    """An IProfiler collecting per-layer milliseconds over iterations (in `.times`)."""

    class Profiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = defaultdict(list)

        def report_layer_time(self, layer_name, ms):  # TensorRT's interface
            self.times[layer_name].append(float(ms))

    return Profiler()


def _device_feeds(session: TrtSession, prepared: Mapping[str, Any]) -> dict[str, Any]:
    """The feeds as torch CUDA tensors (shape tensors stay on the host), for TrtRunner.infer
    without host-device copies."""
    import torch

    device = torch.device("cuda", session.gpu.index)
    out = {}
    for name, value in prepared.items():
        tensor = value if hasattr(value, "to") and not isinstance(value, np.ndarray) else torch.from_numpy(value)
        out[name] = tensor if name in session.shape_inputs else tensor.to(device)
    torch.cuda.synchronize(device)
    return out


def polygraphy_latency(session: TrtSession, prepared: Mapping[str, Any],
                       settings: ProfileSettings) -> tuple[list[float], float]:
    """Latency samples of TrtRunner.infer (vlc.timing's host clock; infer synchronises its stream
    before returning) and the wall time of the timed iterations, in seconds."""
    if settings.include_transfers:
        feeds, copy_back = dict(prepared), True  # host arrays: Polygraphy's H2D, execute, D2H
    else:
        feeds, copy_back = _device_feeds(session, prepared), False  # device tensors: no copies
    started: list[float] = []

    def after(ms: float | None) -> None:
        if ms is not None and not started:
            started.append(time.perf_counter() - ms / 1000.0)

    with routed(session.pg.logger):
        samples = time_host_calls(lambda: session.runner.infer(feeds, check_inputs=False,
                                                               copy_outputs_to_host=copy_back),
                                  settings, after=after)
    return samples, time.perf_counter() - started[0]


def event_breakdown(session: TrtSession, prepared: Mapping[str, Any], settings: ProfileSettings,
                    ) -> tuple[dict[str, list[float]], float, bool, str | None]:
    """vlc's own timed run on a second context: ({h2d, compute, d2h, enqueue, latency}, wall time,
    whether a CUDA graph replayed, why there is no breakdown or None)."""
    events_ctx = session.events()
    torch, stream = events_ctx.torch, events_ctx.stream
    why = events_ctx.bind(prepared)
    if why is not None:
        return {}, 0.0, False, why
    tensors = events_ctx.tensors
    pinned_in = {n: tensors[n].cpu().pin_memory() for n in session.inputs if n not in session.shape_inputs}
    pinned_out = {n: torch.empty(tensors[n].shape, dtype=tensors[n].dtype).pin_memory() for n in session.outputs}
    graph = None
    if settings.cuda_graph:
        events_ctx.execute()  # TensorRT needs one launch after shape changes before capture
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            events_ctx.execute()

    def compute() -> None:
        if graph is not None:
            graph.replay()
        else:
            events_ctx.execute()

    events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    samples: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": [], "enqueue": []}
    enqueue_ms = [0.0]
    timed_from: list[float] = []

    def iteration() -> None:
        with torch.cuda.stream(stream):
            events[0].record(stream)
            if settings.include_transfers:
                for n, host in pinned_in.items():
                    tensors[n].copy_(host, non_blocking=True)
            events[1].record(stream)
            t0 = time.perf_counter()
            compute()
            enqueue_ms[0] = (time.perf_counter() - t0) * 1000.0
            events[2].record(stream)
            if settings.include_transfers:
                for n in session.outputs:
                    pinned_out[n].copy_(tensors[n], non_blocking=True)
            events[3].record(stream)

    def read_events(host_ms: float | None) -> None:
        """After the stream synchronisation, outside the timed region: the CUDA-event breakdown."""
        if host_ms is None:  # warm-up
            return
        if not timed_from:
            timed_from.append(time.perf_counter() - host_ms / 1000.0)
        if settings.include_transfers:
            samples["h2d"].append(events[0].elapsed_time(events[1]))
            samples["d2h"].append(events[2].elapsed_time(events[3]))
        samples["compute"].append(events[1].elapsed_time(events[2]))
        samples["enqueue"].append(enqueue_ms[0])

    samples["latency"] = time_host_calls(iteration, settings, sync=stream.synchronize, after=read_events)
    walltime = time.perf_counter() - timed_from[0]
    return samples, walltime, graph is not None, None


def per_layer_times(session: TrtSession, settings: ProfileSettings) -> dict[str, list[float]]:
    """Per-layer milliseconds through IProfiler, in a run of its own without CUDA graphs (the
    profiler's per-layer synchronisations would skew the timed runs)."""
    events_ctx = session.events()
    profiler = _layer_profiler(session.trt)
    events_ctx.context.profiler = profiler
    for _ in range(max(1, min(settings.iterations, 20))):
        events_ctx.execute()
        events_ctx.stream.synchronize()
    return dict(profiler.times)


def profile_session(session: TrtSession, feeds: Mapping[str, np.ndarray], settings: ProfileSettings,
                    batch: int, device: str) -> ProfileResult:
    """Latency from Polygraphy's TrtRunner.infer (vlc.timing's host clock), unless CUDA graphs are
    asked for (Polygraphy has none: then the graph replays are timed); the H2D / compute / D2H
    breakdown from vlc's CUDA events in a run of their own."""
    prepared = session.engine_feeds(feeds)
    samples, walltime, replayed, why = event_breakdown(session, prepared, settings)
    if settings.cuda_graph and why is not None:
        raise InputError(f"CUDA graphs need static output shapes: {why}", fix="profile without --cuda-graph")
    source = "vlc CUDA-graph replays (Polygraphy has no CUDA graphs)"
    if not settings.cuda_graph:
        samples["latency"], walltime = polygraphy_latency(session, prepared, settings)
        source = "Polygraphy TrtRunner.infer"
    per_layer = per_layer_times(session, settings) if settings.per_layer and why is None else None
    result = assemble(batch, device, samples, include_transfers=settings.include_transfers,
                      host_walltime_s=walltime, cuda_graph=replayed, per_layer=per_layer)
    result.extra["latency_source"] = source
    if not settings.cuda_graph:
        result.extra["timing_detail"] = (
            "latency by the host clock around Polygraphy's TrtRunner.infer, which returns after "
            "synchronising its stream: " + ("host arrays copied H2D, execute_async_v3, copied D2H"
                                            if settings.include_transfers else "inputs and outputs on the GPU")
            + "; the H2D / GPU compute / D2H breakdown by CUDA events in a run of its own on a second "
              "execution context (pinned host buffers)")
    if why is not None:
        result.warnings.append(f"no CUDA-event breakdown: {why}")
    return result
