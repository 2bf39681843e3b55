"""What machine a measurement was taken on: host, OS, CPU, accelerators, drivers, SDK versions.

Everything is read from files and tools that are present on the machine; a probe that is not
there (no nvidia-smi, no Ascend toolkit, no git checkout) is simply left out. Nothing here
imports a vendor SDK: versions come from package metadata and version files.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import socket
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import vlc

# Python distributions whose versions matter for a measurement.
SDK_PACKAGES = (
    "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "onnx-ir", "onnxsim",
    "numpy", "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-rtx", "tensorrt-rtx-cu13",
    "polygraphy", "torch-npu", "ais-bench", "transformers",
)
ASCEND_VERSION_FILES = (
    "/usr/local/Ascend/ascend-toolkit/latest/version.cfg",
    "/usr/local/Ascend/ascend-toolkit/latest/toolkit/version.info",
    "/usr/local/Ascend/driver/version.info",
)


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def cpu_info() -> dict[str, Any]:
    """Model, core counts, frequency and vector extensions (Linux /proc and /sys; else platform)."""
    info: dict[str, Any] = {"arch": platform.machine(), "logical_cores": os.cpu_count() or 1}
    text = _read("/proc/cpuinfo") or ""
    model = re.search(r"^(?:model name|Model|cpu model)\s*:\s*(.+)$", text, re.M)
    info["model"] = model.group(1).strip() if model else (platform.processor() or platform.machine())
    vendor = re.search(r"^vendor_id\s*:\s*(.+)$", text, re.M)
    if vendor:
        info["vendor"] = vendor.group(1).strip()
    cores = {(m.group(1), m.group(2)) for m in re.finditer(
        r"physical id\s*:\s*(\d+).*?core id\s*:\s*(\d+)", text, re.S)}
    if cores:
        info["physical_cores"] = len(cores)
    with contextlib.suppress(AttributeError, OSError):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    flags_match = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M)
    flags = set(flags_match.group(1).split()) if flags_match else set()
    info["simd"] = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                                "avx2", "fma", "avx", "sve", "asimd", "asimdhp") if f in flags]
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_khz and max_khz.strip().isdigit():
        info["max_ghz"] = round(int(max_khz) / 1e6, 3)
        info["frequency_source"] = "cpufreq max"
    else:
        nominal = re.search(r"@\s*([\d.]+)\s*GHz", info["model"])
        mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)
        if nominal:
            info["max_ghz"] = float(nominal.group(1))
            info["frequency_source"] = "nominal (model name)"
        elif mhz:
            info["max_ghz"] = round(float(mhz.group(1)) / 1000, 3)
            info["frequency_source"] = "current (/proc/cpuinfo)"
    return info


# Environment variables that set the thread pools of the CPU runtimes (unset: each runtime's default).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS",
                    "ORT_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY", "GOMP_CPU_AFFINITY")
CPUFREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq")


def _first_line(path: str | Path) -> str | None:
    text = _read(path)
    return text.strip().splitlines()[0].strip() if text and text.strip() else None


def _cpu_quota() -> str | None:
    """The CPU time a cgroup allows this process ("1.5 CPUs"), or None when unlimited or unknown."""
    text = _first_line("/sys/fs/cgroup/cpu.max")  # cgroup v2: "max 100000" or "150000 100000"
    if text:
        quota, _, period = text.partition(" ")
        if quota.isdigit() and period.isdigit() and int(period) > 0:
            return f"{int(quota) / int(period):g} CPUs (cgroup cpu.max)"
        return None
    v1_quota = _first_line("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    v1_period = _first_line("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if v1_quota and v1_period and v1_quota.lstrip("-").isdigit() and v1_period.isdigit() \
            and int(v1_quota) > 0 < int(v1_period):
        return f"{int(v1_quota) / int(v1_period):g} CPUs (cgroup cfs quota)"
    return None


def _turbo() -> str | None:
    no_turbo = _first_line("/sys/devices/system/cpu/intel_pstate/no_turbo")
    if no_turbo in ("0", "1"):
        return "off" if no_turbo == "1" else "on"
    boost = _first_line("/sys/devices/system/cpu/cpufreq/boost")
    return {"0": "off", "1": "on"}.get(boost or "")


def timing_conditions() -> dict[str, Any]:
    """What on this machine moves CPU timings: the frequency governor and driver, turbo, SMT,
    a cgroup CPU quota, thread-pool variables, the load when the first record was taken, and
    whether it is a virtual machine. None where the machine does not expose it (a VM often
    has no cpufreq)."""
    smt = _first_line("/sys/devices/system/cpu/smt/active")
    load = (_read("/proc/loadavg") or "").split()[:3]
    flags = re.search(r"^flags\s*:\s*(.+)$", _read("/proc/cpuinfo") or "", re.M)
    return {
        "governor": _first_line(CPUFREQ / "scaling_governor"),
        "frequency_driver": _first_line(CPUFREQ / "scaling_driver"),
        "turbo": _turbo(),
        "smt": {"1": "on", "0": "off"}.get(smt or ""),
        "cpu_quota": _cpu_quota(),
        "thread_variables": {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ},
        "load_average": [float(v) for v in load] if len(load) == 3 else None,
        "virtual_machine": bool(flags and "hypervisor" in flags.group(1).split()),
    }


def nvidia_gpus() -> list[dict[str, Any]]:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                "--format=csv,noheader,nounits"])
    gpus = []
    for line in (out or "").strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpu: dict[str, Any] = {"name": parts[0], "driver": parts[1]}
            if parts[2].isdigit():
                gpu["memory_mib"] = int(parts[2])
            if len(parts) > 3 and parts[3]:
                gpu["compute_capability"] = parts[3]
            gpus.append(gpu)
    if gpus:
        cuda = re.search(r"CUDA Version:\s*([\d.]+)", _run(["nvidia-smi"]) or "")
        if cuda:
            for gpu in gpus:
                gpu["driver_cuda"] = cuda.group(1)
        conditions = gpu_conditions(_run(["nvidia-smi", "--query-gpu=" + ",".join(GPU_CONDITIONS),
                                          "--format=csv,noheader,nounits"]) or "")
        for gpu, found in zip(gpus, conditions):
            gpu.update(found)
    return gpus


# What moves GPU timings besides the kernels: persistence mode, clocks now and at most, the power cap.
GPU_CONDITIONS = ("persistence_mode", "clocks.sm", "clocks.max.sm", "power.limit")


def gpu_conditions(text: str) -> list[dict[str, Any]]:
    """nvidia-smi's CSV of GPU_CONDITIONS, one dict per GPU; "[N/A]" fields left out."""
    rows = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(GPU_CONDITIONS):
            continue
        row: dict[str, Any] = {}
        for name, value in zip(("persistence_mode", "sm_clock_mhz", "max_sm_clock_mhz", "power_limit_w"), parts):
            if not value or value.startswith("["):
                continue
            try:
                row[name] = value if name == "persistence_mode" else float(value)
            except ValueError:
                continue
        rows.append(row)
    return rows


def ascend_npus() -> list[dict[str, Any]]:
    """Ascend NPUs from `npu-smi info` (chip names such as 310P3), with the driver version."""
    out = _run(["npu-smi", "info"])
    if not out:
        return []
    driver = re.search(r"Version:\s*([\w.\-]+)", out)
    chips = re.findall(r"\|\s*\d+\s+(\d{3}[A-Z]?\d?)\s*\|", out)
    return [{"name": f"Ascend {chip}", "driver": driver.group(1) if driver else ""} for chip in chips]


def ascend_toolkit() -> dict[str, str]:
    found = {}
    for path in ASCEND_VERSION_FILES:
        text = _read(path)
        if text:
            version = re.search(r"(?:version|Version)\s*[=:]\s*\[?([\w.\-]+)", text)
            if version:
                found[Path(path).parent.name if "driver" not in path else "ascend-driver"] = version.group(1)
    return found


def sdk_versions() -> dict[str, str]:
    versions = {}
    for name in SDK_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    for key, value in ascend_toolkit().items():
        versions[f"cann ({key})" if key != "ascend-driver" else key] = value
    return versions


def git_revision() -> dict[str, Any] | None:
    """The vlc source checkout's commit (and whether it has uncommitted changes), if any."""
    source = Path(vlc.__file__).resolve().parent
    head = _run(["git", "-C", str(source), "rev-parse", "HEAD"])
    if not head:
        return None
    dirty = _run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"])
    return {"commit": head.strip(), "dirty": bool(dirty and dirty.strip())}


def _os_name() -> str:
    release = _read("/etc/os-release") or ""
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', release, re.M)
    base = pretty.group(1) if pretty else f"{platform.system()} {platform.release()}"
    return f"{base} (kernel {platform.release()})" if pretty else base


@cache
def collect() -> dict[str, Any]:
    """The environment of this process's machine, as JSON-ready data (cached per process)."""
    memory = None
    meminfo = _read("/proc/meminfo") or ""
    total = re.search(r"MemTotal:\s*(\d+)\s*kB", meminfo)
    if total:
        memory = round(int(total.group(1)) / 2**20, 1)
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "os": _os_name(),
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "memory_gib": memory,
        "gpus": nvidia_gpus(),
        "npus": ascend_npus(),
        "sdk": sdk_versions(),
        "vlc_version": vlc.__version__,
        "timing_conditions": timing_conditions(),
    }
    revision = git_revision()
    if revision:
        env["git"] = revision
    return env


def device_name(env: dict[str, Any], device: str) -> str:
    """What a target's device kind means on this machine: a GPU or NPU name, else the CPU model."""
    kind, _, index = device.partition(":")
    position = int(index) if index.isdigit() else 0
    pool = env.get("gpus", []) if kind == "cuda" else env.get("npus", []) if kind == "npu" else None
    if pool is None:
        return env.get("cpu", {}).get("model", "CPU")
    if position < len(pool):
        return pool[position]["name"]
    return {"cuda": "no NVIDIA GPU on this machine", "npu": "no Ascend NPU on this machine"}.get(
        kind, f"no {kind} device on this machine")


def driver_of(env: dict[str, Any], device: str) -> str:
    kind = device.partition(":")[0]
    pool = env.get("gpus", []) if kind == "cuda" else env.get("npus", []) if kind == "npu" else []
    return pool[0].get("driver", "") if pool else ""
