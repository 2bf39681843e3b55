"""GPU presets as data: compute capability, memory, SMs and datasheet peaks.

Peaks are NVIDIA datasheet / architecture whitepaper figures for dense (non-sparse) math, in
TFLOPS (TOPS for int8); None where no figure is published or known here. GeForce cards quote
fp16 tensor throughput with fp32 accumulation here (half their fp16-accumulate figure), the rate
TensorRT's fp16 GEMMs with fp32 accumulation see. The bench/report code reads peaks from
`gpu_presets()` to compute utilisation; it must never treat them as measurements.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

# Compute capabilities whose engines TensorRT-RTX's runtime can execute (tensorrt_rtx 1.x);
# the builder's own ComputeCapability enum is the final word (see backend.rtx_targets).
RTX_RUNTIME_CAPABILITIES = ((8, 0), (8, 6), (8, 9), (12, 0), (12, 1))


@dataclass(frozen=True)
class GpuPreset:
    name: str
    gpu: str  # marketing name
    compute_capability: tuple[int, int]
    memory_gib: float
    sm_count: int
    memory_bandwidth_gbs: float | None
    peak_fp32_tflops: float | None  # CUDA cores, non-tensor
    peak_tf32_tflops: float | None  # tensor cores, dense
    peak_fp16_tflops: float | None  # tensor cores, dense
    peak_bf16_tflops: float | None
    peak_int8_tops: float | None
    source: str

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def peak_for(self, precision: str) -> float | None:
        """Dense peak for a vlc precision name (fp32, tf32, fp16, bf16, int8), TFLOPS/TOPS."""
        return {"fp32": self.peak_fp32_tflops, "tf32": self.peak_tf32_tflops,
                "fp16": self.peak_fp16_tflops, "bf16": self.peak_bf16_tflops,
                "int8": self.peak_int8_tops}.get(precision)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = self.cc
        return data


_PRESETS = (
    GpuPreset("a10", "NVIDIA A10", (8, 6), 24, 72, 600, 31.2, 62.5, 125, 125, 250,
              "NVIDIA A10 datasheet"),
    GpuPreset("a10g", "NVIDIA A10G (AWS)", (8, 6), 24, 80, 600, 31.2, None, None, None, None,
              "AWS G5 documentation; tensor peaks unpublished"),
    GpuPreset("a30", "NVIDIA A30", (8, 0), 24, 56, 933, 10.3, 82, 165, 165, 330,
              "NVIDIA A30 datasheet"),
    GpuPreset("a100", "NVIDIA A100 SXM4 80GB", (8, 0), 80, 108, 2039, 19.5, 156, 312, 312, 624,
              "NVIDIA A100 datasheet"),
    GpuPreset("a100-40gb", "NVIDIA A100 SXM4 40GB", (8, 0), 40, 108, 1555, 19.5, 156, 312, 312, 624,
              "NVIDIA A100 datasheet"),
    GpuPreset("l4", "NVIDIA L4", (8, 9), 24, 58, 300, 30.3, 60, 121, 121, 242.5,
              "NVIDIA L4 datasheet (sparse figures halved)"),
    GpuPreset("l40s", "NVIDIA L40S", (8, 9), 48, 142, 864, 91.6, 183, 362, 362, 733,
              "NVIDIA L40S datasheet (sparse figures halved)"),
    GpuPreset("h100", "NVIDIA H100 SXM5 80GB", (9, 0), 80, 132, 3350, 67, 494.7, 989.4, 989.4, 1979,
              "NVIDIA H100 datasheet (sparse figures halved)"),
    GpuPreset("h100-pcie", "NVIDIA H100 PCIe 80GB", (9, 0), 80, 114, 2000, 51, 378, 756, 756, 1513,
              "NVIDIA H100 datasheet (sparse figures halved)"),
    GpuPreset("h200", "NVIDIA H200 SXM 141GB", (9, 0), 141, 132, 4800, 67, 494.7, 989.4, 989.4, 1979,
              "NVIDIA H200 datasheet (sparse figures halved)"),
    GpuPreset("t4", "NVIDIA T4", (7, 5), 16, 40, 320, 8.1, None, 65, None, 130,
              "NVIDIA T4 datasheet"),
    GpuPreset("rtx3090", "GeForce RTX 3090", (8, 6), 24, 82, 936, 35.6, 35.6, 71, 71, 284,
              "NVIDIA Ampere GA102 whitepaper (fp32 accumulate)"),
    GpuPreset("rtx4090", "GeForce RTX 4090", (8, 9), 24, 128, 1008, 82.6, 82.6, 165.2, 165.2, 660.6,
              "NVIDIA Ada Lovelace whitepaper (fp32 accumulate)"),
    GpuPreset("rtx5090", "GeForce RTX 5090", (12, 0), 32, 170, 1792, 104.8, 104.8, 209.5, 209.5, 838,
              "NVIDIA Blackwell GB202 whitepaper (fp32 accumulate)"),
)

DEFAULT_PRESET = "a10"


@cache
def _table() -> dict[str, GpuPreset]:
    return {p.name: p for p in _PRESETS}


def gpu_presets() -> dict[str, GpuPreset]:
    """Every GPU preset by name (a10 is the default). A copy: callers may not change the table."""
    return dict(_table())


def preset_for_capability(cc: tuple[int, int]) -> list[str]:
    """Preset names with compute capability `cc` (for suggestions in errors)."""
    return [p.name for p in _PRESETS if p.compute_capability == tuple(cc)]
