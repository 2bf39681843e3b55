"""ONNX Runtime sessions: options from the spec, graph copies, and the Session wrapper."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import VlcError, first_line
from vlc.onnx_files import copy_onnx, external_data_locations
from vlc.timing import ProfileResult, ProfileSettings, host_profile

OPT_LEVELS = ("disable", "basic", "extended", "all")
_ORT_TYPES = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}


def graph_level(name: str) -> Any:
    import onnxruntime as ort

    return {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[name]


def session_options(options: Mapping[str, Any], *, optimized_path: Path | None = None,
                    external_data: bool = False) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = graph_level(options.get("graph_optimization_level", "all"))
    if options.get("intra_op_threads"):
        so.intra_op_num_threads = int(options["intra_op_threads"])
    so.log_severity_level = 3  # errors only: warnings about node placement are not the user's concern
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
        if external_data:  # a model with external data is likely past protobuf's 2 GiB limit
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                        optimized_path.name + ".data")
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                        "1024")
    return so


def external_data_files(onnx_path: Path) -> list[str]:
    """Relative locations of the external-data files an ONNX file refers to."""
    return external_data_locations(onnx_path)


def copy_graph(src: Path, dst_dir: Path, name: str = "model.onnx") -> list[str]:
    """Copy an ONNX file as dst_dir/name with all its external data (same relative locations);
    the copied files, relative to dst_dir."""
    return copy_onnx(src, dst_dir / name, keep_locations=True)


OperatorProfile = Callable[[Mapping[str, np.ndarray]], dict[str, Any]]  # feeds -> per-operator times


def with_operators(result: ProfileResult, settings: ProfileSettings, per_operator: OperatorProfile | None,
                   feeds: Mapping[str, np.ndarray]) -> ProfileResult:
    """Add ONNX Runtime's per-operator profile when asked for (its own session: profiling slows runs)."""
    if settings.per_layer and per_operator is not None:
        result.extra["per_operator"] = per_operator(feeds)
    return result


class OrtSession:
    """An opened onnxruntime artifact; float16 graph inputs/outputs are cast at the boundary.

    `per_operator` runs ONNX Runtime's operator profiler for `profile(per_layer=True)`."""

    def __init__(self, session: Any, device: str = "cpu", per_operator: OperatorProfile | None = None):
        self._session = session
        self.device = device
        self.per_operator = per_operator
        self.input_types = {i.name: i.type for i in session.get_inputs()}
        self.output_names = [o.name for o in session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {}
        for name, ort_type in self.input_types.items():
            array = np.asarray(feeds[name])
            wanted = _ORT_TYPES.get(ort_type)
            if wanted is not None and array.dtype != wanted and np.issubdtype(array.dtype, np.floating):
                array = array.astype(wanted)
            inputs[name] = array
        try:
            values = self._session.run(self.output_names, inputs)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types are not importable portably
            raise VlcError(f"onnxruntime failed while running: {first_line(exc)}",
                           fix="check the inputs' shapes; rerun with --debug for details") from None
        return {name: (v.astype(np.float32) if v.dtype == np.float16 else v)
                for name, v in zip(self.output_names, values)}

    def profile(self, feeds: Mapping[str, np.ndarray], settings: ProfileSettings, batch: int) -> ProfileResult:
        """Host arrays in and out, so a call includes any transfers and ends when the outputs are
        on the host (synchronised, on a GPU provider)."""
        result = host_profile(lambda: self.run(feeds), settings, batch, device=self.device,
                              includes_transfers=True)
        return with_operators(result, settings, self.per_operator, feeds)

    def close(self) -> None:
        self._session = None

