"""STAND-IN for ais_bench.infer.interface (see tests/standins/README.md)."""

import time
from pathlib import Path

from ais_bench.om import Model


class _Summary:
    def __init__(self, times):
        self.exec_time_list = list(times)


class InferSession:
    def __init__(self, device_id, model_path):
        self.device_id = device_id
        self.model = Model(Path(model_path))
        self._times = []

    def get_inputs(self):
        return self.model.inputs

    def get_outputs(self):
        return self.model.outputs

    def infer(self, feeds, mode="static"):
        if mode not in ("static", "dymbatch", "dymhw", "dymdims", "dymshape"):
            raise ValueError(f"unknown mode {mode}")
        if (mode == "dymbatch") != bool(self.model.gears):
            raise RuntimeError(f"mode {mode} does not fit this model (gears {self.model.gears})")
        batch = feeds[0].shape[0] if mode == "dymbatch" else None
        arrays = []
        for k, array in enumerate(feeds):
            shape = self.model.input_shape(k, batch)
            if list(array.shape) != shape:
                raise RuntimeError(f"input {k} has shape {list(array.shape)}, the model takes {shape}")
            arrays.append(array)
        start = time.perf_counter()
        outs = self.model.run(arrays)
        self._times.append((time.perf_counter() - start) * 1000)
        return outs

    def summary(self):
        return _Summary(self._times)

    sumary = summary  # older releases spell it this way

    def reset_summaryinfo(self):
        self._times = []

    def free_resource(self):
        self.model = None
