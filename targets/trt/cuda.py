"""CUDA GPUs on this machine, through the driver library (no torch or CUDA toolkit needed)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import cache

_CC_MAJOR, _CC_MINOR, _SM_COUNT = 75, 76, 16  # CUdevice_attribute values


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: tuple[int, int]
    sm_count: int
    memory_bytes: int

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def describe(self) -> str:
        return f"cuda:{self.index} {self.name} (compute capability {self.cc}, {self.sm_count} SMs)"


@cache
def gpus() -> tuple[tuple[Gpu, ...], str]:
    """(GPUs, reason): the reason says why the list is empty."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return (), "no NVIDIA driver (libcuda.so.1 not found)"
    if (rc := lib.cuInit(0)) != 0:
        return (), f"the CUDA driver did not initialise (cuInit error {rc})"
    count = ctypes.c_int()
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return (), "the CUDA driver sees no GPU"
    found = []
    for index in range(count.value):
        dev = ctypes.c_int()
        lib.cuDeviceGet(ctypes.byref(dev), index)
        values = {}
        for key, attr in (("major", _CC_MAJOR), ("minor", _CC_MINOR), ("sms", _SM_COUNT)):
            out = ctypes.c_int()
            lib.cuDeviceGetAttribute(ctypes.byref(out), attr, dev)
            values[key] = out.value
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, 256, dev)
        memory = ctypes.c_size_t()
        lib.cuDeviceTotalMem_v2(ctypes.byref(memory), dev)
        found.append(Gpu(index, name.value.decode(errors="replace"), (values["major"], values["minor"]),
                         values["sms"], memory.value))
    return tuple(found), ""
