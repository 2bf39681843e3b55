"""Running and profiling an engine: name-based I/O, execute_async_v3 on a non-default stream,
torch CUDA tensors as buffers, host-clock timing synchronised per iteration (vlc's one timing
method) with a CUDA-event H2D / compute / D2H breakdown, optional CUDA graphs, per-layer IProfiler.

NOT YET EXECUTED ON GPU HARDWARE (see README.md): written against the TensorRT 10/11 and
TensorRT-RTX 1.7 Python APIs; tests/targets/trt/test_trt_runtime.py runs it on a supported GPU.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Mapping

import numpy as np

from vlc.artifact import Artifact
from vlc.errors import CompileError, InputError, TargetUnavailable
from vlc.targets.trt.backend import Backend
from vlc.targets.trt.cuda import Gpu
from vlc.timing import ProfileResult, ProfileSettings, time_host_calls

_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
                 "INT32": "int32", "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}


def _torch_cuda() -> Any:
    try:
        import torch
    except ImportError:
        raise TargetUnavailable("running TensorRT engines needs torch (its CUDA tensors are the buffers)",
                                fix="install torch with CUDA support") from None
    if not torch.cuda.is_available():
        raise TargetUnavailable(f"torch {torch.__version__} has no CUDA (a CPU-only build, or no driver)",
                                fix="install a CUDA build of torch to run engines")
    return torch


class TrtSession:
    """A deserialized engine with one execution context and one non-default CUDA stream."""

    def __init__(self, artifact: Artifact, backend: Backend, gpu: Gpu) -> None:
        torch = _torch_cuda()
        trt = backend.module
        self.torch, self.trt, self.gpu = torch, trt, gpu
        self.device = torch.device("cuda", gpu.index)
        torch.cuda.set_device(self.device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(artifact.file("main").read_bytes())
        if self.engine is None:
            raise CompileError(f"{backend.name} {backend.version} could not deserialize the engine",
                               where=str(artifact.file("main")),
                               fix="rebuild it with this TensorRT version (`vlc compile --force`)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self.device)
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, Any] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            (self.inputs if mode == trt.TensorIOMode.INPUT else self.outputs).append(name)
            key = str(self.engine.get_tensor_dtype(name)).split(".")[-1]
            self.dtypes[name] = getattr(torch, _TORCH_DTYPES[key])
        # min/opt/max shape of each input in the engine's optimization profile 0
        self.shape_ranges = {name: tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(name, 0))
                             for name in self.inputs}
        self._bound: dict[str, Any] = {}

    # ---- binding ---------------------------------------------------------------------------
    def bind(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Set shapes, copy inputs to the device, allocate outputs; return the device tensors."""
        torch = self.torch
        if missing := sorted(set(self.inputs) - set(feeds)):
            raise InputError(f"missing engine input(s) {', '.join(missing)}",
                             fix=f"the engine takes: {', '.join(self.inputs)}")
        tensors: dict[str, Any] = {}
        with torch.cuda.stream(self.stream):
            for name in self.inputs:
                array = np.ascontiguousarray(feeds[name])
                lo, _, hi = self.shape_ranges[name]
                shape = tuple(array.shape)
                if len(shape) != len(lo) or any(not a <= d <= b for a, d, b in zip(lo, shape, hi)):
                    raise InputError(f"input '{name}' shape {list(shape)} is outside the engine's profile "
                                     f"{list(lo)}..{list(hi)}",
                                     fix="recompile with --shapes or --batch covering this shape")
                if not self.context.set_input_shape(name, shape):
                    raise InputError(f"TensorRT rejected shape {list(shape)} for input '{name}'",
                                     fix="check the profile in the artifact's manifest")
                host = torch.from_numpy(array)
                tensors[name] = host.to(device=self.device, dtype=self.dtypes[name], non_blocking=False)
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise InputError(f"output '{name}' has a data-dependent shape {list(shape)}",
                                     fix="vlc's TensorRT runner needs output shapes known from input shapes")
                tensors[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            for name, tensor in tensors.items():
                self.context.set_tensor_address(name, tensor.data_ptr())
        self._bound = tensors
        return tensors

    def execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise CompileError("execute_async_v3 failed", fix="rerun with --debug; see TensorRT's log")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = self.bind(feeds)
        self.execute()
        with self.torch.cuda.stream(self.stream):
            host = {name: tensors[name].to("cpu", non_blocking=False) for name in self.outputs}
        self.stream.synchronize()
        return {name: (t.float() if t.dtype == self.torch.bfloat16 else t).numpy() for name, t in host.items()}

    def profile(self, feeds: Mapping[str, np.ndarray], settings: ProfileSettings, batch: int) -> ProfileResult:
        return profile_session(self, feeds, settings, batch, self.gpu.describe())

    def close(self) -> None:
        self.stream.synchronize()
        self._bound.clear()
        del self.context, self.engine


def _layer_profiler(trt: Any) -> Any:
    """An IProfiler collecting per-layer milliseconds over iterations (in `.times`)."""

    class Profiler(trt.IProfiler):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = defaultdict(list)

        def report_layer_time(self, layer_name, ms):  # noqa: ANN001, ANN202 - TensorRT's interface
            self.times[layer_name].append(float(ms))

    return Profiler()


def profile_session(session: TrtSession, feeds: Mapping[str, np.ndarray], settings: ProfileSettings,
                    batch: int, device: str) -> ProfileResult:
    """Warm up, then time each iteration with the host clock up to the stream synchronisation (the
    latency), and its H2D / compute / D2H parts with CUDA events (trtexec's split)."""
    from vlc.targets.trt.summary import assemble

    torch = session.torch
    stream = session.stream
    tensors = session.bind(feeds)
    pinned_in = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])).to(session.dtypes[n]).pin_memory()
                 for n in session.inputs}
    pinned_out = {n: torch.empty(tensors[n].shape, dtype=tensors[n].dtype).pin_memory() for n in session.outputs}
    graph = None
    if settings.cuda_graph:
        session.execute()  # TensorRT needs one launch after shape changes before capture
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            session.execute()

    def compute() -> None:
        if graph is not None:
            graph.replay()
        else:
            session.execute()

    events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    samples: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": [], "enqueue": []}
    enqueue_ms = [0.0]
    timed_from: list[float] = []  # when the first timed iteration started (trtexec's host walltime)

    def iteration() -> None:
        with torch.cuda.stream(stream):
            events[0].record(stream)
            if settings.include_transfers:
                for n in session.inputs:
                    tensors[n].copy_(pinned_in[n], non_blocking=True)
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

    # vlc's one timing method: the host clock around each iteration up to the stream synchronisation
    samples["latency"] = time_host_calls(iteration, settings, sync=stream.synchronize, after=read_events)
    walltime = time.perf_counter() - timed_from[0]

    per_layer = None
    if settings.per_layer:
        # a separate run without CUDA graphs: the profiler's per-layer syncs would skew the timings
        profiler = _layer_profiler(session.trt)
        session.context.profiler = profiler
        for _ in range(max(1, min(settings.iterations, 20))):
            session.execute()
            stream.synchronize()
        per_layer = dict(profiler.times)
    return assemble(batch, device, samples, include_transfers=settings.include_transfers,
                    host_walltime_s=walltime, cuda_graph=graph is not None, per_layer=per_layer)
