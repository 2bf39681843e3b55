"""Precision in the graph, shared by every target: fp16 / bf16 casts and int8 Q/DQ.

TensorRT 11 and TensorRT-RTX are strongly typed (no fp16/int8 builder flags, no calibrators),
Ascend and ONNX Runtime take typed graphs too, so precision is decided here, once, in ONNX:

    report = convert(Path("model.onnx"), Precision.FP16, Path("model.fp16.onnx"))
    report = convert(src, Precision.INT8, dst, calibration=CalibrationData.from_dir("calib/"),
                     method="entropy")
    manifest["extra"]["precision"] = report.to_json()

Library choice: our own fp16/bf16 pass (lowp.py) and ONNX Runtime's static quantization for
int8 (quantize.py), because NVIDIA ModelOpt's `[onnx]` extra pins onnx~=1.21 and
onnxruntime-gpu~=1.24 (replacing this environment's onnx 1.23 and onnxruntime 1.31) and pulls
cupy-cuda12x, so it does not install cleanly beside the rest of vlc.

Every converted graph is run in ONNX Runtime against the fp32 graph on generated,
non-degenerate inputs; the numbers are in the report (`report.accuracy`), and `strict`
conversions raise AccuracyError when they miss the precision's tolerance.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlc.accuracy import Tolerance, compare_outputs, default_tolerance
from vlc.errors import AccuracyError, ExportError, InputError
from vlc.frontend.precision.calibration import CalibrationData, refuse_constant
from vlc.frontend.precision.check import EMULATION_NOTE, emulate_low_precision, run_onnx
from vlc.frontend.precision.int8 import INT8_MODES, Int8Settings, build_int8
from vlc.frontend.precision.islands import (
    DEFAULT_MAX_EVALUATIONS,
    ISLAND_MODES,
    ensure_node_names,
    parse_goal,
    search_islands,
)
from vlc.frontend.precision.lowp import KEEP_FP32_OPS, TYPE_FIXED_OPS, to_low_precision
from vlc.frontend.precision.quantize import DEFAULT_QUANT_OPS, METHODS
from vlc.frontend.precision.report import ConversionReport
from vlc.model import InputSpec, generate_from_specs, specs_from_signature
from vlc.signature import onnx_signature
from vlc.spec import Precision

__all__ = ["convert", "ConversionReport", "CalibrationData", "KEEP_FP32_OPS", "DEFAULT_QUANT_OPS",
           "ISLAND_MODES", "INT8_MODES", "Int8Settings", "METHODS", "Precision", "parse_goal", "refuse_constant"]

LARGE_MODEL_BYTES = 1_800_000_000  # past this, save weights as external data (protobuf's 2 GiB limit)
CHECK_SEED = 0
CHECK_BATCH = 2


def model_inputs(source: Any, precision: Precision | str) -> dict[str, Any]:
    """convert()'s check (and int8 calibration) inputs from a compile's one input source.

    `source` is a CompileSource. With a PyTorch model behind it, its own generator gives them
    (token ids within the embedding tables, masks that keep a token, images with their real
    distribution); otherwise convert() derives them from the input specs. Checking on other data
    than the artifact is compared on later would pass builds that `vlc compare` then fails."""
    if getattr(source, "user_inputs", None):
        return {"check_feeds": source.user_inputs, "check_note": "the inputs given with --input"}
    if source.model is None:
        return {}
    inputs: dict[str, Any] = {"check_feeds": source.model.generate_inputs(CHECK_BATCH, seed=CHECK_SEED),
                              "check_note": f"{source.model.name}'s input generator (batch {CHECK_BATCH}, "
                                            f"seed {CHECK_SEED})"}
    if Precision(precision) is Precision.INT8:
        inputs["calibration"] = CalibrationData.generate(source.model)
    return inputs


def convert(onnx_path: Path, precision: Precision | str, out_path: Path, *,
            calibration: CalibrationData | None = None, method: str = "minmax",
            percentile: float = 99.999, input_specs: list[InputSpec] | None = None,
            check_feeds: Mapping[str, np.ndarray] | None = None, check_batch: int = CHECK_BATCH,
            seed: int = CHECK_SEED, tolerance: Tolerance | None = None, strict: bool = True,
            check_note: str = "given feeds",
            keep_fp32_ops: Iterable[str] | None = None, islands: str = "static",
            max_island_runs: int = DEFAULT_MAX_EVALUATIONS,
            quantize_ops: Iterable[str] = DEFAULT_QUANT_OPS, per_channel: bool = True,
            int8: Int8Settings | None = None) -> ConversionReport:
    """Write `onnx_path` converted to `precision` at `out_path` and check it against fp32.

    fp16 / bf16: low-precision graph with fp32 islands (see lowp.KEEP_FP32_OPS plus decomposed
    LayerNorm patterns), fp32 graph I/O, fp16 constants clamped to +-65504. `islands="auto"`
    starts from those islands and keeps only the nodes the check inputs show the `tolerance`
    needs (islands.search_islands, at most `max_island_runs` runs); report.islands records it.
    int8: Q/DQ graph calibrated on `calibration` (a directory via CalibrationData.from_dir, or
    CalibrationData.generate(model)); without it, calibration is generated from `input_specs`
    (the model's input generators). `method`: minmax, entropy or percentile (ONNX Runtime's
    calibrators) or mse (vlc's least-error range per tensor). `int8` (Int8Settings): auto mode
    (the nodes that cost most accuracy per MAC kept in float until `tolerance` is met), uint8
    activations, 7-bit weights; report.int8 records the MAC share, exclusions and table.
    fp32 / tf32: the graph is copied unchanged (tf32 is a compiler setting, not a graph type).

    The check runs `check_feeds`, or inputs generated from `input_specs` (else generic ones from
    the graph's signature) at `check_batch` with `seed`, through ONNX Runtime, comparing against
    the fp32 graph with `tolerance` (default: the precision's). With `strict`, a failed check
    raises AccuracyError (the report is on the exception as `.report`).
    """
    precision = Precision(precision)
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise InputError(f"ONNX file {onnx_path} does not exist", fix="export the model first")
    if out_path.resolve() == onnx_path.resolve():
        raise InputError(f"conversion would overwrite its source {onnx_path}", fix="write to another path")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    signature = onnx_signature(onnx_path)

    import onnx

    if precision in (Precision.FP32, Precision.TF32):
        model = onnx.load(str(onnx_path))
        _save(model, out_path)
        n = sum(1 for _ in model.graph.node)
        # file names only: the report goes into artifact manifests, which must not point into caches
        report = ConversionReport(precision.value, Path(onnx_path).name, Path(out_path).name, "copy (unchanged)",
                                  nodes_total=n, unchanged=True,
                                  check={"skipped": "the graph is unchanged"})
        report.seconds = round(time.perf_counter() - start, 3)
        return report

    if precision in (Precision.FP16, Precision.BF16):
        from onnx import TensorProto

        low = TensorProto.FLOAT16 if precision is Precision.FP16 else TensorProto.BFLOAT16
        keep = KEEP_FP32_OPS if keep_fp32_ops is None else frozenset(keep_fp32_ops)
        if islands not in ISLAND_MODES:
            raise InputError(f"islands={islands} is not one of {', '.join(ISLAND_MODES)}",
                             fix="use islands='static' or islands='auto'")
        source_model = onnx.load(str(onnx_path))
        search = None
        if islands == "auto":
            renamed = ensure_node_names(source_model)  # nodes are kept by name
            feeds, where = _check_inputs(signature, check_feeds, input_specs, check_batch, seed, check_note)
            check_feeds, check_note = feeds, where
            reference = run_onnx(onnx_path, feeds)
            search = search_islands(source_model, low, feeds, reference,
                                    tolerance or default_tolerance(precision), keep_ops=keep,
                                    inputs=where, max_evaluations=max_island_runs)
            if renamed:
                search.notes.append(f"{renamed} unnamed or duplicate-named nodes were named in the "
                                    "converted graph")
            converted, stats = to_low_precision(source_model, low, keep & TYPE_FIXED_OPS,
                                                keep_nodes=search.chosen, layernorm_islands=False)
        else:
            converted, stats = to_low_precision(source_model, low, keep)
        _save(converted, out_path)
        try:
            onnx.checker.check_model(str(out_path))
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the {precision.value} conversion produced an invalid graph: "
                              f"{str(exc).splitlines()[0]}", where=str(onnx_path),
                              fix="report this as a vlc bug; keep_fp32_ops can route around the op") from None
        report = ConversionReport(
            precision.value, Path(onnx_path).name, Path(out_path).name,
            f"vlc low-precision pass (onnx {onnx.__version__})",
            nodes_total=stats.nodes_total, nodes_low_precision=stats.nodes_low,
            fp32_ops=dict(stats.fp32_ops), layernorm_islands=stats.layernorm_islands,
            casts_inserted=stats.casts_inserted, constants_clamped=stats.clamped,
            constants_clamped_names=stats.clamped_names, constants_flushed=stats.flushed,
            islands=search.to_json() if search is not None else None)

        # ONNX Runtime's CPU has no bf16 and few fp16 kernels, and drops the graph's Casts to fp16
        # in front of ops it runs in fp32: the emulation keeps every stored tensor's rounding and
        # range. bf16 is checked only so; fp16 both as the graph runs here (what `vlc compare` of
        # an onnxruntime artifact sees) and emulated (what a GPU's fp16 tensors would overflow).
        check_model: Any = converted if precision is Precision.FP16 else emulate_low_precision(converted, low)
        emulated = emulate_low_precision(converted, low) if precision is Precision.FP16 else None
        report.check["emulated"] = EMULATION_NOTE.format(precision=precision.value)
    elif precision is Precision.INT8:
        import onnxruntime

        if method not in METHODS:
            raise InputError(f"unknown calibration method '{method}'", fix=f"use one of: {', '.join(METHODS)}")
        if calibration is None:
            if input_specs is None:
                raise InputError("int8 needs calibration data",
                                 fix="pass calibration (a directory of .npz feeds) or the model's input specs")
            calibration = CalibrationData.generate(list(input_specs))
        calibration = calibration.bind(signature)
        int8 = int8 or Int8Settings()
        gate_feeds = (_check_inputs(signature, check_feeds, input_specs, check_batch, seed, check_note)[0]
                      if int8.mode == "auto" else None)
        result = build_int8(onnx_path, out_path, calibration, settings=int8, check_feeds=gate_feeds,
                            min_cosine=(tolerance or default_tolerance(precision)).min_cosine, method=method,
                            percentile=percentile, per_channel=per_channel, op_types=tuple(quantize_ops))
        counts = result.counts
        graph = onnx.load(str(out_path), load_external_data=False).graph
        fp32_ops = Counter(n.op_type for n in graph.node
                           if n.op_type not in ("QuantizeLinear", "DequantizeLinear"))
        activations = "symmetric int8" if int8.activations == "int8" else "asymmetric uint8"
        report = ConversionReport(
            precision.value, Path(onnx_path).name, Path(out_path).name,
            f"onnxruntime.quantization {onnxruntime.__version__} (QDQ, {activations} activations, "
            f"{'per-channel' if per_channel else 'per-tensor'} {'7-bit ' if int8.reduce_range else ''}int8 weights)",
            nodes_total=sum(fp32_ops.values()), nodes_low_precision=counts["quantized_nodes"],
            qdq_nodes=counts["quantize_linear"] + counts["dequantize_linear"], method=method,
            calibration={"source": calibration.source, "feeds": len(calibration),
                         "samples": calibration.samples, "method": method,
                         **({"percentile": percentile} if method == "percentile" else {})},
            int8=result.to_json())
        if counts["quantized_nodes"] == 0:
            report.warnings.append(f"no {'/'.join(quantize_ops)} node was quantized; the graph runs in fp32")
        if result.note:
            report.warnings.append(f"int8=auto: {result.note}")
        check_model = out_path
        emulated = None
    else:  # pragma: no cover - Precision has no other members
        raise InputError(f"precision {precision.value} has no graph conversion")

    _check(report, onnx_path, check_model, precision, signature, check_feeds, input_specs,
           check_batch, seed, tolerance, check_note, emulated)
    report.seconds = round(time.perf_counter() - start, 3)
    if strict and not report.passed:
        # no `where`: out_path is a file in a build directory that is removed with the failed build
        err = AccuracyError(f"the {precision.value} graph misses its tolerance against fp32 "
                            f"({report.check.get('inputs', 'check inputs')}): {_failures(report)}",
                            fix="calibrate on representative data, keep more operators in fp32, or use "
                                "another --precision (the target's -O options: `vlc targets --json`)")
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report


def _save(model, path: Path) -> None:
    import onnx

    for stale in path.parent.glob(path.name + ".data"):
        stale.unlink()
    if model.ByteSize() >= LARGE_MODEL_BYTES:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data")
    else:
        onnx.save(model, str(path))


def _check(report: ConversionReport, source: Path, converted, precision: Precision, signature,
           feeds: Mapping[str, np.ndarray] | None, input_specs: list[InputSpec] | None,
           batch: int, seed: int, tolerance: Tolerance | None, check_note: str = "given feeds",
           emulated=None) -> None:
    import onnxruntime

    feeds, where = _check_inputs(signature, feeds, input_specs, batch, seed, check_note)
    tolerance = tolerance or default_tolerance(precision)
    reference = run_onnx(source, feeds)
    for graph in (converted, emulated):
        if graph is None:
            continue
        try:
            actual = run_onnx(graph, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ExportError(f"the {precision.value} graph does not run in ONNX Runtime: "
                              f"{str(exc).splitlines()[0][:300]}", where=report.output,
                              fix="report this as a vlc bug; keep_fp32_ops can route around the op") from None
        if graph is converted:
            report.accuracy = compare_outputs(actual, reference, tolerance)
        else:
            report.emulated_accuracy = compare_outputs(actual, reference, tolerance)
    report.check.update({"runtime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
                         "inputs": where, "reference": "the fp32 source graph in the same runtime"})


def _check_inputs(signature, feeds: Mapping[str, np.ndarray] | None,
                  input_specs: list[InputSpec] | None, batch: int, seed: int,
                  check_note: str) -> tuple[Mapping[str, np.ndarray], str]:
    """The check's feeds (given, or generated from the specs) and a line saying what they are."""
    if feeds is None:
        specs = list(input_specs) if input_specs is not None else specs_from_signature(signature.inputs)
        feeds = generate_from_specs(specs, batch, seed)
        where = f"generated inputs (batch {batch}, seed {seed}, " \
                f"{'model input specs' if input_specs is not None else 'generic specs from the signature'})"
    else:
        where = check_note
    signature.validate_inputs(feeds, where="conversion check inputs")
    return feeds, where


def _failures(report: ConversionReport) -> str:
    assert report.accuracy is not None
    failed = [f"{o.name}: {o.reason}" for o in report.accuracy.outputs if not o.passed]
    if report.emulated_accuracy is not None:
        failed += [f"{o.name} with every {report.precision} tensor rounded and ranged as stored: {o.reason}"
                   for o in report.emulated_accuracy.outputs if not o.passed]
    return "; ".join(failed)

