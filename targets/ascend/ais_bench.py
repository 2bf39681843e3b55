"""Running .om models through ais_bench and reading its timing summaries.

Three ways in, first that works: the command in $VLC_AIS_BENCH (an executable path, or a
command line such as `python3 -m ais_bench`), ais_bench's Python API
(`ais_bench.infer.interface.InferSession`), its CLI `python3 -m ais_bench`. Inputs go in as
.npy files with the model's exact dtypes (ais_bench matches files to inputs by byte size),
outputs come back by index (OM output names look like `<op>:<idx>:<onnx name>`), and the
summary JSON or console summary becomes a ProfileResult of NPU compute time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import TargetUnavailable, VlcError
from vlc.timing import LatencyStats, ProfileResult, variation_warning

ENV_COMMAND = "VLC_AIS_BENCH"
METRICS = {"H2D_latency": "h2d", "NPU_compute_time": "compute", "D2H_latency": "d2h"}


class AisBenchError(VlcError):
    """ais_bench ran but failed."""


# ---- summary parsing -----------------------------------------------------------------------
@dataclass(frozen=True)
class StatBlock:
    min: float
    max: float
    mean: float
    median: float
    p99: float
    count: int | None = None

    def stats(self) -> LatencyStats:
        nan = float("nan")
        return LatencyStats(self.count or 0, self.min, self.max, self.mean, self.median, nan, nan,
                            self.p99, nan)


@dataclass
class AisSummary:
    blocks: dict[str, StatBlock] = field(default_factory=dict)  # h2d, compute, d2h
    throughput: float | None = None
    batchsize: float | None = None
    compute_times: list[float] | None = None  # ms per inference, when the JSON lists them
    source: str = ""

    def to_profile(self, batch: int, device: str) -> ProfileResult:
        if "compute" not in self.blocks and not self.compute_times:
            raise AisBenchError("the ais_bench summary has no NPU_compute_time",
                                fix="check the ais_bench output in the run log")
        warnings = []
        if self.compute_times:
            latency = LatencyStats.from_samples(self.compute_times)
        else:
            latency = self.blocks["compute"].stats()
            warnings.append("ais_bench gave only min/max/mean/median/p99: p90, p95 and std are unknown")
        breakdown = {"compute": latency}
        for key in ("h2d", "d2h"):
            block = self.blocks.get(key)
            if block is not None and (block.count or block.mean):
                breakdown[key] = block.stats()
        extra: dict[str, Any] = {"timer": "ais_bench NPU_compute_time (model execution, no copies)",
                                 "summary_source": self.source}
        if self.throughput is not None:
            extra["ais_bench_throughput"] = self.throughput
        return ProfileResult(batch=batch, latency=latency, includes_transfers=False, breakdown=breakdown,
                             device=device, warnings=warnings + variation_warning(latency, "NPU compute time"),
                             extra=extra)


def _block(data: dict[str, Any]) -> StatBlock | None:
    if not isinstance(data, dict) or "mean" not in data:
        return None
    p99 = next((v for k, v in data.items() if k.startswith(("percentile", "P")) and "99" in k), None)
    mean = float(data["mean"])
    return StatBlock(float(data.get("min", mean)), float(data.get("max", mean)), mean,
                     float(data.get("median", mean)), float(p99 if p99 is not None else mean),
                     int(data["count"]) if "count" in data else None)


def _durations(values: list[Any]) -> list[float]:
    """npu_compute_time_list holds ms values, or [start, end] pairs in multi-thread runs."""
    out = []
    for v in values:
        if isinstance(v, (list, tuple)) and len(v) == 2:
            out.append(float(v[1]) - float(v[0]))
        else:
            out.append(float(v))
    return out


def parse_summary_json(data: dict[str, Any]) -> AisSummary:
    summary = AisSummary(source="summary json")
    for key, short in METRICS.items():
        block = _block(data.get(key, {}))
        if block is not None:
            summary.blocks[short] = block
    if data.get("throughput") is not None:
        summary.throughput = float(data["throughput"])
    times = data.get("npu_compute_time_list")
    if isinstance(times, list) and times:
        summary.compute_times = _durations(times)
    return summary


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR_RE = re.compile(rf"(min|max|mean|median|percentile\(\d+%\)|P\d+)\s*=\s*({_NUMBER})")
_METRIC_RE = re.compile(r"(H2D_latency|NPU_compute_time|D2H_latency)\s*\(ms\)")
_THROUGHPUT_RE = re.compile(
    rf"[Tt]hroughput\s+1000\*batchsize\.mean\(({_NUMBER})\)/NPU_compute_time\.mean\(({_NUMBER})\):\s*({_NUMBER})")


def parse_console(text: str) -> AisSummary:
    """The console summary: `NAME (ms): min = ..., ...` lines (older releases) or a table row
    `│ NAME (ms) │ min │ max │ mean │ median │ P99 │` (newer), and the throughput line."""
    summary = AisSummary(source="console")
    for line in text.splitlines():
        metric = _METRIC_RE.search(line)
        if metric:
            short = METRICS[metric.group(1)]
            rest = line[metric.end():]
            pairs = dict(_PAIR_RE.findall(rest))
            if pairs:
                p99 = next((v for k, v in pairs.items() if "99" in k), None)
                mean = float(pairs["mean"])
                summary.blocks[short] = StatBlock(float(pairs.get("min", mean)), float(pairs.get("max", mean)),
                                                  mean, float(pairs.get("median", mean)),
                                                  float(p99) if p99 is not None else mean)
            else:
                numbers = [float(x) for x in re.findall(_NUMBER, rest.replace("│", " ").replace("|", " "))]
                if len(numbers) >= 5:
                    summary.blocks[short] = StatBlock(numbers[0], numbers[1], numbers[2], numbers[3], numbers[4])
        found = _THROUGHPUT_RE.search(line)
        if found:
            summary.batchsize = float(found.group(1))
            summary.throughput = float(found.group(3))
    return summary


# ---- finding ais_bench ---------------------------------------------------------------------
@dataclass(frozen=True)
class Runner:
    kind: str  # "command" ($VLC_AIS_BENCH), "api", "cli"
    command: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "api":
            return "ais_bench Python API (InferSession)"
        return f"ais_bench CLI: {' '.join(self.command)}"


def find_ais_bench() -> tuple[Runner | None, str]:
    override = os.environ.get(ENV_COMMAND)
    if override:
        command = tuple(shlex.split(override))
        if command and shutil.which(command[0]):  # a path to an executable, or a name on PATH
            return Runner("command", command), ""
        return None, f"{ENV_COMMAND}={override} does not start with an executable"
    if _has_module("ais_bench.infer.interface"):
        return Runner("api"), ""
    if _has_module("ais_bench"):
        return Runner("cli", (sys.executable, "-m", "ais_bench")), ""
    return None, ("ais_bench not found: install it from the Ascend tools repository (ais_bench "
                  f"wheels), or point {ENV_COMMAND} at a command that runs it")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---- running -------------------------------------------------------------------------------
def cli_args(om: Path, inputs: Sequence[Path], output: Path, dirname: str, *, device: int,
             dym_batch: int | None, loop: int = 1, warmup: int = 1, summary: bool = False) -> list[str]:
    args = ["--model", str(om), "--input", ",".join(str(p) for p in inputs), "--output", str(output),
            "--output_dirname", dirname, "--outfmt", "NPY", "--device", str(device),
            "--loop", str(loop), "--warmup_count", str(warmup)]
    if dym_batch is not None:
        args += ["--dymBatch", str(dym_batch)]
    if summary:
        args += ["--display_all_summary", "True"]
    return args


def write_inputs(arrays: Sequence[np.ndarray], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, array in enumerate(arrays):
        path = directory / f"in{i}.npy"
        np.save(path, np.ascontiguousarray(array))
        paths.append(path)
    return paths


def read_outputs(directory: Path, first_input: str, count: int) -> list[np.ndarray]:
    outputs = []
    for k in range(count):
        path = directory / f"{first_input}_{k}.npy"
        if not path.is_file():
            found = ", ".join(sorted(p.name for p in directory.glob("*"))) or "nothing"
            raise AisBenchError(f"ais_bench wrote no output {k} ({path.name}); found {found}",
                                where=str(directory), fix="check the run log next to it")
        outputs.append(np.load(path))
    return outputs


def find_summary(output: Path, dirname: str) -> Path | None:
    exact = output / f"{dirname}_summary.json"
    if exact.is_file():
        return exact
    found = sorted(output.glob("*_summary.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


class AisBench:
    """One way of running ais_bench, with the run/profile calls vlc needs."""

    def __init__(self, runner: Runner, device: int = 0, timeout: float = 1800):
        self.runner = runner
        self.device = device
        self.timeout = timeout
        self._sessions: dict[str, Any] = {}

    # -- CLI (and $VLC_AIS_BENCH) ------------------------------------------------------------
    def _cli(self, om: Path, arrays: Sequence[np.ndarray], dym_batch: int | None, work: Path, *,
             loop: int, warmup: int, summary: bool) -> tuple[Path, str]:
        inputs = write_inputs(arrays, work / "inputs")
        output = work / "out"
        output.mkdir(parents=True, exist_ok=True)
        args = cli_args(om, inputs, output, "run", device=self.device, dym_batch=dym_batch, loop=loop,
                        warmup=warmup, summary=summary)
        try:
            proc = subprocess.run([*self.runner.command, *args], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise AisBenchError(f"ais_bench did not finish in {self.timeout:.0f} s", where=str(om),
                                fix="lower the iterations, or check the device with npu-smi info") from None
        except OSError as exc:
            raise TargetUnavailable(f"cannot start ais_bench ({self.runner.describe()}): {exc}",
                                    fix=f"check {ENV_COMMAND} or the ais_bench installation") from None
        text = proc.stdout.decode(errors="replace")
        (work / "ais_bench.log").write_text(text)
        if proc.returncode != 0:
            tail = " | ".join(ln.strip() for ln in text.splitlines()[-3:] if ln.strip())
            raise AisBenchError(f"ais_bench failed (exit {proc.returncode}): {tail[:400]}", where=str(om),
                                fix="check that the .npy inputs match the model's dtypes and shapes, "
                                    "and the device with npu-smi info")
        return output, text

    def infer(self, om: Path, arrays: Sequence[np.ndarray], dym_batch: int | None,
              n_outputs: int) -> list[np.ndarray]:
        if self.runner.kind == "api":
            session = self._api_session(om)
            return [np.asarray(o) for o in session.infer(list(arrays), mode=_mode(dym_batch))]
        with tempfile.TemporaryDirectory(prefix="vlc-ais-") as tmp:
            output, _ = self._cli(om, arrays, dym_batch, Path(tmp), loop=1, warmup=0, summary=False)
            return read_outputs(output / "run", "in0", n_outputs)

    def profile(self, om: Path, arrays: Sequence[np.ndarray], dym_batch: int | None, batch: int, *,
                iterations: int, warmup: int, device_label: str, log_dir: Path | None = None
                ) -> ProfileResult:
        if self.runner.kind == "api":
            return self._api_profile(om, arrays, dym_batch, batch, iterations, warmup, device_label)
        with tempfile.TemporaryDirectory(prefix="vlc-ais-") as tmp:
            output, text = self._cli(om, arrays, dym_batch, Path(tmp), loop=iterations, warmup=warmup,
                                     summary=True)
            path = find_summary(output, "run")
            if path is not None:
                summary = parse_summary_json(json.loads(path.read_text()))
                console = parse_console(text)
                for key, block in console.blocks.items():
                    summary.blocks.setdefault(key, block)
            else:
                summary = parse_console(text)
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                (log_dir / f"ais_bench_bs{batch}.log").write_text(text)
        result = summary.to_profile(batch, device_label)
        result.extra["runner"] = self.runner.describe()
        return result

    # -- Python API --------------------------------------------------------------------------
    def _api_session(self, om: Path) -> Any:
        key = str(om)
        if key not in self._sessions:
            from ais_bench.infer.interface import InferSession

            self._sessions[key] = InferSession(self.device, str(om))
        return self._sessions[key]

    def _api_profile(self, om: Path, arrays: Sequence[np.ndarray], dym_batch: int | None, batch: int,
                     iterations: int, warmup: int, device_label: str) -> ProfileResult:
        session = self._api_session(om)
        feeds = list(arrays)
        for _ in range(warmup):
            session.infer(feeds, mode=_mode(dym_batch))
        reset = getattr(session, "reset_summaryinfo", None) or getattr(session, "reset_sumaryinfo", None)
        if reset is not None:
            reset()
        for _ in range(iterations):
            session.infer(feeds, mode=_mode(dym_batch))
        getter = getattr(session, "summary", None) or session.sumary
        times = _durations(list(getter().exec_time_list))[-iterations:]
        summary = AisSummary(compute_times=times, source="InferSession summary")
        summary.throughput = 1000.0 * batch / float(np.mean(times)) if times and np.mean(times) > 0 else None
        result = summary.to_profile(batch, device_label)
        result.extra["runner"] = self.runner.describe()
        result.warnings.append("the Python API gives NPU compute times only; H2D/D2H come from the CLI")
        return result

    def close(self) -> None:
        for session in self._sessions.values():
            for name in ("free_resource", "finalize"):
                fn = getattr(session, name, None)
                if fn is not None:
                    with contextlib.suppress(Exception):  # closing is best effort; the process ends soon after
                        fn()
                    break
        self._sessions.clear()


def _mode(dym_batch: int | None) -> str:
    return "static" if dym_batch is None else "dymbatch"
