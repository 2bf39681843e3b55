"""Pre-flight check of an ONNX graph against what ATC of one CANN version accepts.

Each finding names the node, what ATC would do with it, and the patch that vlc applies
automatically to fix it (or the user action when no patch can). `auto_patches` turns the
findings into the patch list a build runs; `check` also applies those patches to a copy and
checks again, so what it promises to fix is shown fixed.
"""

from __future__ import annotations

from typing import Any

from vlc.ascend_patches.core import PatchContext, apply_patches
from vlc.ascend_patches.einsum import Equation
from vlc.ascend_patches.fp16 import FLOAT_TYPES, out_of_range
from vlc.ascend_patches.graph import Graph, attr, opset
from vlc.ascend_patches.int32 import int64_groups
from vlc.errors import InputError
from vlc.preflight import ERROR, INFO, WARNING, CheckReport, Finding
from vlc.signature import Signature, onnx_signature
from vlc.spec import Precision, TargetSpec
from vlc.targets.ascend.cann import cann_info, input_dtypes, op_support
from vlc.targets.ascend.options import AscendOptions
from vlc.targets.ascend.patch_set import ordered

# Finding and CheckReport are core's (vlc.preflight), so that `vlc check` prints any target's report
__all__ = ["ERROR", "INFO", "WARNING", "CheckReport", "Finding", "auto_patches", "check", "check_graph"]


def _node_label(n: Any) -> str:
    return n.name or (n.output[0] if n.output else n.op_type)


def check_graph(model: Any, opts: AscendOptions, spec: TargetSpec, signature: Signature) -> list[Finding]:
    findings: list[Finding] = []
    info = cann_info(opts.cann)
    support = op_support()
    version = opset(model)
    if not info.min_opset <= version <= info.max_opset:
        findings.append(Finding(ERROR, "opset", f"ONNX opset {version} is outside {info.label}'s "
                                f"range {info.min_opset}-{info.max_opset}", fix="ascend-opset"))
    g = Graph(model)
    mixed_fp32 = opts.precision == Precision.FP32 or opts.precision_flag[1] in (
        "must_keep_origin_dtype", "origin", "force_fp32")
    for n in model.graph.node:
        label = _node_label(n)
        if n.domain not in ("", "ai.onnx"):
            findings.append(Finding(ERROR, "custom-domain", f"operator {n.domain}::{n.op_type} is not an "
                                    "ONNX standard operator; ATC has no parser for it", label, n.op_type,
                                    hint="export without custom ops, or write an Ascend custom operator"))
            continue
        parsed = support.parsed(n.op_type, opts.cann)
        if parsed is False:
            missing = support.missing.get(n.op_type)
            fix = missing["fix"] if missing else None
            if n.op_type == "LayerNormalization":
                fix = "ascend-layernorm"
            why = missing["why"] if missing else f"not parsed before CANN {support.parsed_from.get(n.op_type)}"
            findings.append(Finding(ERROR, "unsupported-op", f"{n.op_type}: {why} ({info.label})", label,
                                    n.op_type, fix=fix,
                                    hint=None if fix else "replace the operator in the model source"))
            continue
        if parsed is None:
            findings.append(Finding(WARNING, "unknown-op", f"{n.op_type} is not in vlc's table for "
                                    f"{info.label}; ATC may or may not parse it", label, n.op_type,
                                    hint="check the CANN ONNX operator list; report it to extend the table"))
        for constraint in support.constraints.get(n.op_type, ()):
            finding = CONSTRAINTS[constraint](g, n, opts, mixed_fp32)
            if finding is not None:
                finding.node, finding.op_type = label, n.op_type
                findings.append(finding)
    if opts.precision == Precision.FP16:
        findings += _fp16_constants(model)
    findings += _int64_math(model)
    findings += _inputs(signature, opts, spec)
    return findings


def _gather_negative(g: Graph, n: Any, opts: AscendOptions, mixed_fp32: bool) -> Finding | None:
    index = g.constant(n.input[1]) if len(n.input) > 1 else None
    if index is not None and index.size and (index < 0).any():
        return Finding(ERROR, "gather-negative-index", f"Gather with constant negative index "
                       f"{index.tolist()}: ATC's Gather does not wrap negative indices",
                       fix="ascend-gather-neg-index")
    return None


def _einsum(g: Graph, n: Any, opts: AscendOptions, mixed_fp32: bool) -> Finding | None:
    equation = attr(n, "equation", b"")
    equation = (equation.decode() if isinstance(equation, bytes) else str(equation)).replace(" ", "")
    if equation in op_support().einsum_equations and len(n.input) == 2:
        return None
    fixable = len(n.input) == 2 and Equation.parse(equation) is not None
    return Finding(ERROR, "einsum-equation", f"Einsum '{equation}' with {len(n.input)} inputs is not "
                   "in ATC's list of two-input equations", fix="ascend-einsum" if fixable else None,
                   hint=None if fixable else "rewrite it as matmul/transpose in the model source")


def _layernorm(g: Graph, n: Any, opts: AscendOptions, mixed_fp32: bool) -> Finding | None:
    if mixed_fp32 and cann_info(opts.cann).layernorm_form("fp32") == "decomposed":
        return Finding(WARNING, "layernorm-precision", "LayerNormalization is listed for float16 "
                       "inputs; this build keeps fp32", fix="ascend-layernorm")
    return None


def _scatternd(g: Graph, n: Any, opts: AscendOptions, mixed_fp32: bool) -> Finding | None:
    index = g.constant(n.input[1]) if len(n.input) > 1 else None
    if index is not None and index.size and (index < 0).any():
        return Finding(ERROR, "scatternd-negative-index", "ScatterND with negative indices, which "
                       "ATC does not take", hint="make the indices non-negative in the model source")
    return None


def _int64_indices(g: Graph, n: Any, opts: AscendOptions, mixed_fp32: bool) -> Finding | None:
    return Finding(WARNING, "int64-indices", f"{n.op_type} returns int64 indices; ATC builds have "
                   "failed on int64 vs int32 index types (E89999)", fix="ascend-int64-to-int32")


CONSTRAINTS = {
    "gather_negative_index": _gather_negative,
    "einsum_equation": _einsum,
    "layernorm_precision": _layernorm,
    "scatternd_negative_index": _scatternd,
    "int64_indices": _int64_indices,
}


def _fp16_constants(model: Any) -> list[Finding]:
    from onnx import numpy_helper

    found = []
    for init in model.graph.initializer:
        if init.data_type in FLOAT_TYPES and out_of_range(numpy_helper.to_array(init)):
            found.append(Finding(ERROR, "fp16-range", f"constant {init.name} holds values beyond "
                                 "+-65504: -inf/NaN in fp16", init.name, None, fix="ascend-fp16-clamp"))
    for n in model.graph.node:
        if n.op_type in ("Constant", "ConstantOfShape"):
            for a in n.attribute:
                if a.name == "value" and a.HasField("t") and out_of_range(numpy_helper.to_array(a.t)):
                    found.append(Finding(ERROR, "fp16-range", "constant beyond +-65504: -inf/NaN in "
                                         "fp16", _node_label(n), n.op_type, fix="ascend-fp16-clamp"))
    return found


def _int64_math(model: Any) -> list[Finding]:
    members, bad, has_math = int64_groups(model)
    found = []
    for root, names in members.items():
        if has_math[root] and not any(name in bad for name in names):
            found.append(Finding(WARNING, "int64-math", f"int64 index arithmetic over {len(names)} "
                                 f"tensors ({', '.join(sorted(names)[:3])}{' ...' if len(names) > 3 else ''}) "
                                 "runs on the AI CPU or fails", fix="ascend-int64-to-int32"))
    return found


def _inputs(signature: Signature, opts: AscendOptions, spec: TargetSpec) -> list[Finding]:
    supported, warn = input_dtypes()
    found = []
    for t in signature.inputs:
        if t.dtype in warn:
            found.append(Finding(WARNING, "input-dtype", f"input {t.name} is {t.dtype}: {warn[t.dtype]}",
                                 t.name))
        elif t.dtype not in supported:
            found.append(Finding(ERROR, "input-dtype", f"input {t.name} is {t.dtype}, which ATC does "
                                 "not take as a model input", t.name,
                                 hint="give the model an input of a supported dtype (float32, int32, ...)"))
        for axis, dim in enumerate(t.shape):
            fixed = spec.shapes.get(t.name)
            if isinstance(dim, int):
                if axis == 0 and opts.gears:
                    found.append(Finding(ERROR, "fixed-batch", f"input {t.name} has a fixed batch of "
                                         f"{dim}; dynamic-batch gears need a dynamic first axis", t.name,
                                         hint="export with a dynamic batch axis, or drop -O gears"))
                elif axis == 0 and any(b != dim for b in opts.batches):
                    found.append(Finding(ERROR, "fixed-batch", f"input {t.name} has a fixed batch of "
                                         f"{dim}, the build asks for {list(opts.batches)}", t.name,
                                         hint=f"use --batch {dim}, or export with a dynamic batch axis"))
                continue
            if fixed is not None and fixed.min[axis] == fixed.max[axis]:
                continue
            if axis == 0 and fixed is None:
                continue  # the batch axis: static builds freeze it, gears keep it
            if fixed is not None:
                found.append(Finding(ERROR, "dynamic-dim", f"input {t.name} axis {axis} ('{dim}') "
                                     f"ranges {fixed.min[axis]}..{fixed.max[axis]}; vlc builds ATC models "
                                     "with fixed non-batch dims", t.name,
                                     hint=f"give one size: --shapes {t.name}:"
                                          + "x".join(str(d) for d in fixed.opt)))
            else:
                found.append(Finding(ERROR, "dynamic-dim", f"input {t.name} axis {axis} ('{dim}') is "
                                     "dynamic and not the batch axis; ATC needs its size", t.name,
                                     hint=f"give it with --shapes {t.name}:<dims joined by x>"))
    return found


def auto_patches(findings: list[Finding], opts: AscendOptions) -> list[str]:
    """The patches a build runs: what the findings need plus the always-safe arrangement."""
    wanted = {f.fix for f in findings if f.fix}
    wanted |= {"ascend-opset", "ascend-layernorm", "ascend-attention"}
    if opts.precision == Precision.FP16:
        wanted.add("ascend-fp16-clamp")
    if not opts.gears:
        wanted.add("ascend-freeze-shapes")
    if isinstance(opts.patches, tuple):
        return ordered(opts.patches)
    if opts.patches == "none":
        return []
    if opts.patches != "auto":
        for item in str(opts.patches).split(","):
            item = item.strip()
            if item.startswith("+"):
                wanted.add(item[1:])
            elif item.startswith("-"):
                wanted.discard(item[1:])
    return ordered(wanted)


def patch_context(opts: AscendOptions, spec: TargetSpec, batch: int | None) -> PatchContext:
    shapes = {}
    for name, r in spec.shapes.items():
        if r.min[1:] == r.max[1:] and batch is not None:
            shapes[name] = (batch, *r.max[1:])
    return PatchContext(cann=opts.cann, batch=batch, shapes=shapes, precision=opts.precision.value,
                        soc_version=opts.soc_version)


def check(model: Any, opts: AscendOptions, spec: TargetSpec, signature: Signature, *,
          patch: bool = True) -> CheckReport:
    """Findings on `model`; with `patch`, the auto patches applied to a copy and checked again."""
    import onnx

    findings = check_graph(model, opts, spec, signature)
    patches = auto_patches(findings, opts)
    report = CheckReport(opts.target, findings, patches, compiler="ATC",
                         context=f"{opts.soc_version}, CANN {opts.cann}",
                         facts={"soc_version": opts.soc_version, "cann": opts.cann})
    if not patch:
        return report
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    batch = opts.builds[0][1]
    try:
        patched, _ = apply_patches(copy, patches, patch_context(opts, spec, batch))
    except Exception as exc:  # noqa: BLE001 - a patch that cannot apply is a finding of its own
        report.patch_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        return report

    report.after = [f for f in check_graph(patched, opts, spec, onnx_signature(patched))
                    if f.code not in ("fixed-batch",) or batch is None]
    if batch is not None:
        report.notes.append(f"patched and re-checked at batch {batch}")
    return report


def raise_for_blocking(report: CheckReport, where: str) -> None:
    remaining = report.remaining
    if remaining:
        first = remaining[0]
        raise InputError(f"{len(remaining)} problem(s) ATC would reject remain after vlc's patches; "
                         f"first: {first.message}" + (f" at {first.node}" if first.node else ""),
                         where=where, fix=first.hint or "run `vlc check` for the full list")
