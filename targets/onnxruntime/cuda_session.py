"""ONNX Runtime on CUDA with device-resident buffers (IOBinding) and, for static shapes, CUDA graphs.

Two timings come out of one session: end to end (host arrays in, host arrays out: transfers
included) and device-resident (inputs already on the GPU, outputs left there: what the GPU
compute plus launch costs, the number that compares with other runtimes' GPU compute time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vlc.errors import VlcError
from vlc.timing import HOST_CLOCK_SYNCED, ProfileResult, ProfileSettings, host_profile, variation_warning

_NUMPY_OF = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}


def cuda_provider(cuda_graph: bool, device_id: int = 0, attention: int = 0,
                  conv_algo: str = "HEURISTIC") -> tuple[str, dict[str, str]]:
    options = {"device_id": str(device_id),
               "enable_cuda_graph": "1" if cuda_graph else "0",
               # fp32 means fp32: ONNX Runtime would otherwise use TF32 matmuls
               "use_tf32": "0",
               # how cuDNN picks convolution algorithms (gpu_path.CONV_ALGO_SEARCH says why heuristic)
               "cudnn_conv_algo_search": conv_algo}
    if attention:
        options["sdpa_kernel"] = str(attention)  # a bit mask of the attention backends allowed
    return ("CUDAExecutionProvider", options)


class OrtCudaSession:
    """Runs with IOBinding; with `cuda_graph`, the first run at a shape captures a CUDA graph and
    later runs replay it (ONNX Runtime needs the same device buffers for every replay, so input
    buffers are allocated once per shape and refilled)."""

    def __init__(self, session: Any, cuda_graph: bool, device_id: int = 0):
        self._session = session
        self.cuda_graph = cuda_graph
        self.device_id = device_id
        self.input_types = {i.name: i.type for i in session.get_inputs()}
        self.output_names = [o.name for o in session.get_outputs()]
        self._binding: Any = None
        self._inputs: dict[str, Any] = {}
        self._shapes: dict[str, tuple[int, ...]] | None = None

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def _host_inputs(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = {}
        for name, ort_type in self.input_types.items():
            array = np.ascontiguousarray(feeds[name])
            wanted = _NUMPY_OF.get(ort_type)
            if wanted is not None and array.dtype != wanted:
                array = array.astype(wanted)
            arrays[name] = array
        return arrays

    def _bind(self, arrays: Mapping[str, np.ndarray]) -> Any:
        """Copy inputs to the device (reusing buffers of the same shape) and bind outputs there."""
        import onnxruntime as ort

        shapes = {name: a.shape for name, a in arrays.items()}
        if self._binding is not None and shapes == self._shapes:
            for name, array in arrays.items():
                self._inputs[name].update_inplace(array)
            return self._binding
        if self._binding is not None and self.cuda_graph:
            raise VlcError("a CUDA-graph session runs one input shape only",
                           fix="open one session per batch size, or set -O cuda_graph=false")
        binding = self._session.io_binding()
        self._inputs = {}
        for name, array in arrays.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id)
            self._inputs[name] = value
            binding.bind_ortvalue_input(name, value)
        for name, value in self._output_buffers(shapes).items():
            if value is None:
                binding.bind_output(name, "cuda", self.device_id)
            else:
                binding.bind_ortvalue_output(name, value)
        self._binding, self._shapes = binding, shapes
        return binding

    def _output_buffers(self, input_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
        """Pre-allocated outputs for CUDA graphs (replays need fixed addresses); None: ORT allocates.

        Output dims are resolved from the input dims with the same symbolic name (the batch)."""
        import onnxruntime as ort

        if not self.cuda_graph:
            return {name: None for name in self.output_names}
        symbols: dict[str, int] = {}
        for meta in self._session.get_inputs():
            for dim, size in zip(meta.shape, input_shapes[meta.name]):
                if isinstance(dim, str):
                    symbols[dim] = size
        buffers = {}
        for meta in self._session.get_outputs():
            shape = [d if isinstance(d, int) else symbols.get(d) for d in meta.shape]
            dtype = _NUMPY_OF.get(meta.type)
            if any(d is None for d in shape) or dtype is None:
                raise VlcError(f"output '{meta.name}' has dims {meta.shape} that the inputs do not fix, "
                               "so it cannot be pre-allocated for a CUDA graph",
                               fix="set -O cuda_graph=false")
            buffers[meta.name] = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda",
                                                                           self.device_id)
        return buffers

    def _run_bound(self) -> None:
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types are not importable portably
            text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
            raise VlcError(f"onnxruntime (CUDA) failed while running: {text}",
                           fix="check input shapes; with CUDA graphs every node must run on CUDA "
                               "(retry with -O cuda_graph=false)") from None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._bind(self._host_inputs(feeds))
        self._run_bound()
        outputs = self._binding.copy_outputs_to_cpu()
        return {name: (v.astype(np.float32) if v.dtype == np.float16 else v)
                for name, v in zip(self.output_names, outputs)}

    def end_to_end(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """One call: host -> device copies, run, device -> host copies."""
        arrays = self._host_inputs(feeds)

        def call() -> Any:
            self._bind(arrays)
            self._run_bound()
            return self._binding.copy_outputs_to_cpu()

        return call

    def device_resident(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """One call: inputs stay on the device, outputs stay there; returns when the GPU is done."""
        self._bind(self._host_inputs(feeds))

        def call() -> Any:
            self._run_bound()
            self._binding.synchronize_outputs()

        return call

    def profile(self, feeds: Mapping[str, np.ndarray], settings: ProfileSettings, batch: int) -> ProfileResult:
        """Both timings from one session, by the host clock (ONNX Runtime synchronises the CUDA
        stream at the end of each run): end to end (host arrays in and out) and device-resident
        (IOBinding buffers stay on the GPU); the latency is the one `include_transfers` asks for."""
        end_to_end = host_profile(self.end_to_end(feeds), settings, batch, device="cuda",
                                  includes_transfers=True, method=HOST_CLOCK_SYNCED)
        compute = host_profile(self.device_resident(feeds), settings, batch, device="cuda",
                               includes_transfers=False, method=HOST_CLOCK_SYNCED)
        result = end_to_end if settings.include_transfers else compute
        result.breakdown = {"end_to_end": end_to_end.latency, "compute": compute.latency}
        result.warnings = variation_warning(compute.latency, "device-resident latency")
        result.extra.update({
            "timing_detail": "host clock around run_with_iobinding, which synchronises the CUDA stream; "
                             "compute = inputs and outputs resident on the GPU",
            "cuda_graph": self.cuda_graph, "providers": self.providers})
        return result

    def close(self) -> None:
        self._binding = None
        self._inputs = {}
        self._session = None
