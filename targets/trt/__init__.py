"""The TensorRT targets (`trt`, `trt-rtx`); the SDKs are imported lazily, never at import time."""

from vlc.targets.trt.presets import GpuPreset, gpu_presets

__all__ = ["GpuPreset", "gpu_presets"]
