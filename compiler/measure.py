"""The measurement layer: reference outputs, accuracy, timing and FLOPs into bench records.

`vlc bench`, `vlc profile`, `vlc compare`, the front end's parity check, the precision check
and the Ascend import all measure through here, so a record (and a reference) means the same
whichever command produced it:

- `reference_outputs`: the one reference runner, PyTorch in true fp32 (TF32 off) or the
  source graph in ONNX Runtime on the CPU in fp32 (`onnx_cpu_outputs`);
- `make_record`: the one BenchRecord factory, with `fill_timing` (latency, throughput, FLOPs,
  share of peak) and `accuracy_of` (an AccuracyReport as a record's accuracy);
- `flop_count`: FLOPs of one call, or None when they cannot be counted.

No backend session is imported here: the references call PyTorch and ONNX Runtime directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import vlc
from vlc import environment as environ
from vlc.accuracy import AccuracyReport, compare_outputs, default_tolerance
from vlc.errors import InputError, VlcError, first_line
from vlc.flops import FlopCount, count_flops, device_peak, utilisation
from vlc.model import ModelSource, named_outputs
from vlc.records import Accuracy, BenchRecord, kept_samples
from vlc.spec import Precision
from vlc.timing import ProfileResult, ProfileSettings

if TYPE_CHECKING:
    import onnx

REFERENCE_TORCH = "torch"  # the PyTorch model, fp32
REFERENCE_ONNX = "onnxruntime-fp32"  # the fp32 source graph in ONNX Runtime on the CPU
REFERENCES = (REFERENCE_TORCH, REFERENCE_ONNX)
# Written into each deploy bundle by `vlc bench --emit`: the bench cell it stands for (model,
# label, machine), so the records imported from it line up with the sweep's other records.
BUNDLE_CELL = "vlc-bench.json"
_FLOAT_TYPES = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}


# ---- references ---------------------------------------------------------------------------------

def reference_outputs(kind: str, source: ModelSource | str | Path, feeds: Mapping[str, np.ndarray], *,
                      device: str = "cpu") -> dict[str, np.ndarray]:
    """The reference outputs on `feeds`: `kind` "torch" runs the PyTorch model `source` in true
    fp32 (on `device`); "onnxruntime-fp32" runs the ONNX graph at path `source` on the CPU."""
    if kind == REFERENCE_TORCH:
        if not isinstance(source, ModelSource):
            raise InputError(f"the torch reference needs a PyTorch model, not {source}",
                             fix="use the onnxruntime-fp32 reference for ONNX models")
        return torch_outputs(source, feeds, device=device)
    if kind == REFERENCE_ONNX:
        if isinstance(source, ModelSource):
            raise InputError("the onnxruntime-fp32 reference runs an ONNX graph, not a PyTorch model",
                             fix="pass the source graph's path")
        return onnx_cpu_outputs(source, feeds)
    raise InputError(f"unknown reference '{kind}'", fix=f"use one of: {', '.join(REFERENCES)}")


def torch_outputs(source: ModelSource, feeds: Mapping[str, Any], device: str = "cpu") -> dict[str, Any]:
    """The PyTorch model's outputs in fp32 (on `device`; TF32 off so CUDA stays a true fp32 reference)."""
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])).to(device) for s in source.inputs]
    module = source.module.eval().to(device)
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            out = module(*args)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
        source.module.to("cpu")
    return {name: v.detach().float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
            for name, v in named_outputs(out, source.output_names).items()}


def parity_check(source: ModelSource, onnx_path: str | Path, batch: int) -> AccuracyReport:
    """The exported graph in ONNX Runtime (CPU, fp32) against the PyTorch model on the same inputs."""

    feeds = source.generate_inputs(batch, seed=1)
    reference = reference_outputs(REFERENCE_TORCH, source, feeds)
    return compare_outputs(onnx_cpu_outputs(onnx_path, feeds), reference, default_tolerance(Precision.FP32))


def cpu_options() -> Any:
    """ONNX Runtime session options of the CPU reference: every graph optimization, errors only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # node placement warnings are not the user's concern
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def cpu_session(model: str | Path | bytes, options: Any = None) -> Any:
    """An ONNX Runtime CPU session of the reference (options default to `cpu_options()`): the one
    place vlc opens one, so every CPU reference runs the same provider and settings."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, cpu_options() if options is None else options,
                                providers=["CPUExecutionProvider"])


def onnx_cpu_outputs(model: str | Path | onnx.ModelProto, feeds: Mapping[str, np.ndarray], *,
                     options: Any = None) -> dict[str, np.ndarray]:
    """A graph in ONNX Runtime on the CPU, outputs by name.

    Feeds the graph does not take are ignored, and float inputs are cast to the graph's float
    type (an fp16 graph takes the fp32 feeds of its source). `options` (SessionOptions) default
    to `cpu_options()`; the precision check passes its own optimization level."""
    import onnxruntime as ort

    options = cpu_options() if options is None else options
    on_disk = isinstance(model, (str, Path))
    where = str(model) if on_disk else "the graph in memory"
    graph = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    try:
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types are not importable portably
        raise VlcError(f"onnxruntime cannot load {where} on the CPU: {first_line(exc)}",
                       fix="check the file with `vlc export`") from None
    inputs = {}
    for meta in session.get_inputs():
        array = np.asarray(feeds[meta.name])
        wanted = _FLOAT_TYPES.get(meta.type)
        if wanted is not None and array.dtype != wanted and np.issubdtype(array.dtype, np.floating):
            array = array.astype(wanted)
        inputs[meta.name] = array
    names = [o.name for o in session.get_outputs()]
    try:
        return dict(zip(names, session.run(names, inputs)))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types are not importable portably
        raise VlcError(f"onnxruntime failed running {where} on the CPU: {first_line(exc)}",
                       fix="check the inputs' shapes; rerun with --debug for details") from None


# ---- records ------------------------------------------------------------------------------------

def profile_settings(settings: ProfileSettings, **more: Any) -> dict[str, Any]:
    """A record's `settings`: how it was timed plus what else decides the numbers (seed, graph...)."""
    return {**asdict(settings), **more}


def make_record(*, model: str, target: str, precision: str, batch: int, machine: str, status: str,
                source_hash: str, env: dict[str, Any], settings: Mapping[str, Any], model_ref: str = "",
                device: str = "cpu", device_name: str | None = None, result: ProfileResult | None = None,
                flops: FlopCount | None = None, **fields: Any) -> BenchRecord:
    """One record per (model, target, precision, batch, machine) cell.

    `settings` gets the vlc version that measured (from `env`); with `result`, the timing,
    FLOPs and share of peak are filled in (`fill_timing`)."""
    record = BenchRecord(
        model=model, target=target, precision=precision, batch=batch, machine=machine, status=status,
        source_hash=source_hash, model_ref=model_ref, device=device,
        device_name=device_name or environ.device_name(env, device),
        settings={**settings, "vlc_version": env.get("vlc_version", vlc.__version__)},
        environment=env, **fields)
    if result is not None:
        fill_timing(record, result, flops, env)
    return record


def fill_timing(record: BenchRecord, result: ProfileResult, count: FlopCount | None,
                env: dict[str, Any]) -> None:
    """Latency, throughput, how it was timed, FLOPs per sample, achieved TFLOP/s and share of peak."""
    data = result.to_json()
    record.latency_ms = data["latency_ms"]
    record.samples_ms = kept_samples(result.latency.samples)
    record.throughput_per_s = data["throughput_per_s"]
    record.includes_transfers = result.includes_transfers
    record.warnings = list(result.warnings)
    if result.extra.get("timing"):
        record.settings["timing"] = result.extra["timing"]
    # the session's own facts about the measurement (torch mode, compile time, where inputs were);
    # larger structures (per-operator tables, layer lists) stay out of the record
    facts = {k: v for k, v in result.extra.items() if k != "timing" and _scalar_fact(v)}
    if facts:
        record.settings["measured"] = facts
    if result.breakdown:
        record.settings["breakdown_ms"] = data["breakdown_ms"]
    if count is None:
        record.warnings.append("FLOPs could not be counted from the ONNX graph")
        return
    if count.unresolved:
        record.warnings.append(f"FLOPs: {len(count.unresolved)} matrix op(s) with unknown shapes not "
                               f"counted ({', '.join(count.unresolved[:3])})")
    record.flops_per_sample = count.per_sample
    peak = device_peak(record.device_name, record.precision, env, record.device)
    record.achieved_tflops, record.utilisation = utilisation(count.per_sample, record.throughput_per_s, peak)
    record.peak_tflops = peak.tflops
    record.peak_source = peak.source


def _scalar_fact(value: Any) -> bool:
    return isinstance(value, (str, int, bool)) or (isinstance(value, float) and math.isfinite(value))


def accuracy_of(report: AccuracyReport, reference: str) -> Accuracy:
    """A record's accuracy: passed as the report says, worst figures over the outputs."""
    outputs = [o.to_json() for o in report.outputs]
    finite = [o for o in report.outputs if o.max_abs == o.max_abs]  # NaN when not comparable
    return Accuracy(
        passed=report.passed, reference=reference,
        max_abs=max((o.max_abs for o in finite), default=None),
        median_rel=max((o.median_rel for o in finite), default=None),
        cosine=min((o.cosine for o in finite), default=None),
        tolerance=report.tolerance.to_json(), outputs=outputs)


def flop_count(onnx_path: str | Path | None, batch: int) -> FlopCount | None:
    """FLOPs of one call at `batch`, or None when the graph is missing or cannot be counted."""
    if onnx_path is None or not Path(onnx_path).is_file():
        return None
    try:
        return count_flops(onnx_path, batch)
    except Exception:  # noqa: BLE001 - FLOPs are a nicety; the record says "unknown"
        return None
