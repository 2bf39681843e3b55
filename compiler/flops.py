"""FLOPs of an ONNX graph at a concrete batch size, device peaks, and utilisation.

Counted: the matrix work that dominates vision and vision-language models — MatMul (which
covers attention, whose scores and context are a pair of MatMuls), Gemm, Conv, ConvTranspose,
Einsum of two operands, and the fused Attention operators (ONNX opset 23 `Attention`,
com.microsoft `Attention`/`MultiHeadAttention`). One multiply-add is two FLOPs. Element-wise
work (activations, normalisation, softmax, bias adds) is not counted; it is small next to the
matrix work and no device peak covers it. Shapes come from ONNX shape inference after every
symbolic input dimension is fixed to the batch size; nodes whose shapes stay unknown are listed
in `unresolved` and contribute nothing, so a count is never silently made up.

Device peaks are data (vlc/report/device_peaks.json, with a source per entry); the CPU's peak
is estimated from cores x frequency x SIMD FLOPs per cycle and says so.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from vlc.errors import InputError

COUNTED_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "Attention",
               "MultiHeadAttention", "FusedMatMul", "MatMulInteger", "QLinearMatMul", "ConvInteger",
               "QLinearConv")


@dataclass
class FlopCount:
    batch: int
    total: float  # FLOPs of one call at `batch`
    by_op: dict[str, float] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)  # counted ops whose shapes are unknown
    uncounted: dict[str, int] = field(default_factory=dict)  # control flow holding subgraphs

    @property
    def per_sample(self) -> float:
        return self.total / self.batch

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "total": self.total, "per_sample": self.per_sample,
                "by_op": self.by_op, "unresolved": self.unresolved, "uncounted": self.uncounted}


def _fix_batch(model: Any, batch: int) -> None:
    """Set every symbolic dimension of the graph inputs to `batch` (vlc graphs only make batch dynamic)."""
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = batch


def _shapes(model: Any) -> dict[str, tuple[int | None, ...]]:
    shapes: dict[str, tuple[int | None, ...]] = {}
    graph = model.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        ttype = value.type.tensor_type
        if ttype.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                       for d in ttype.shape.dim)
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for node in graph.node:  # Constant nodes carry their shapes in the attribute
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    shapes[node.output[0]] = tuple(attr.t.dims)
    return shapes


Shape = tuple[int, ...]


def _concrete(*shapes: tuple[int | None, ...] | None) -> list[Shape] | None:
    """The shapes when every dimension of every one is known and positive, else None."""
    known: list[Shape] = []
    for shape in shapes:
        if shape is None or not all(isinstance(d, int) and d > 0 for d in shape):
            return None
        known.append(tuple(int(d) for d in shape if d is not None))
    return known


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _matmul(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """2·M·K·N times the broadcast batch of a numpy-style matmul."""
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    m, k, n = a2[-2], a2[-1], b2[-1]
    lead_a, lead_b = a2[:-2], b2[:-2]
    width = max(len(lead_a), len(lead_b))
    lead_a = (1,) * (width - len(lead_a)) + lead_a
    lead_b = (1,) * (width - len(lead_b)) + lead_b
    batch = math.prod(max(x, y) for x, y in zip(lead_a, lead_b))
    return 2.0 * batch * m * k * n


def _einsum(equation: str, a: tuple[int, ...], b: tuple[int, ...]) -> float | None:
    """2 × the product of every distinct index size (output and contracted) for two operands."""
    lhs = equation.replace(" ", "").split("->")[0]
    terms = lhs.split(",")
    if len(terms) != 2 or "." in lhs or len(terms[0]) != len(a) or len(terms[1]) != len(b):
        return None
    sizes: dict[str, int] = {}
    for term, shape in ((terms[0], a), (terms[1], b)):
        for letter, dim in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), dim)
    return 2.0 * math.prod(sizes.values())


def node_flops(node: Any, shapes: dict[str, tuple[int | None, ...]]) -> float | None:
    """FLOPs of one node, 0 for uncounted op types, None when a needed shape is unknown."""
    op = node.op_type
    ins = [shapes.get(name) if name else None for name in node.input]
    out = shapes.get(node.output[0]) if node.output else None

    def operand(i: int) -> tuple[int | None, ...] | None:
        return ins[i] if i < len(ins) else None

    if op in ("MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul"):  # QLinear: a, a_scale, a_zp, b, ...
        known = _concrete(operand(0), operand(3 if op == "QLinearMatMul" else 1))
        return _matmul(*known) if known else None
    if op == "Gemm":
        if not (known := _concrete(operand(0), operand(1))):
            return None
        a, b = known
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return 2.0 * m * k * n
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        # W: [Cout, Cin/group, k...], Y: [N, Cout, spatial...]; the group is in W's second dim
        if not (known := _concrete(operand(3 if op == "QLinearConv" else 1), out)):
            return None
        w, y = known
        return 2.0 * y[0] * y[1] * math.prod(y[2:]) * w[1] * math.prod(w[2:])
    if op == "ConvTranspose":
        # W: [Cin, Cout/group, k...]; every input element scatters through Cout/group kernels
        if not (known := _concrete(operand(0), operand(1))):
            return None
        x, w = known
        return 2.0 * x[0] * x[1] * math.prod(x[2:]) * w[1] * math.prod(w[2:])
    if op == "Einsum":
        if not (known := _concrete(operand(0), operand(1))):
            return None
        equation = _attr(node, "equation", b"")
        return _einsum(equation.decode() if isinstance(equation, bytes) else equation, *known)
    if op in ("Attention", "MultiHeadAttention"):
        return _attention(node, ins)
    return 0.0


def _attention(node: Any, ins: list[tuple[int | None, ...] | None]) -> float | None:
    """QKᵀ and (softmax)·V: 2·B·H·Sq·Sk·Dqk + 2·B·H·Sq·Sk·Dv (projections are separate MatMuls)."""
    q, k, v = (ins + [None, None, None])[:3]
    if node.domain in ("", "ai.onnx"):  # opset 23: 4-D [B,H,S,D] or 3-D [B,S,H·D] with num_heads
        if not (known := _concrete(q, k, v)):
            return None
        qs, ks, vs = known
        if len(qs) == 4:
            b, h, sq, dqk = qs
            sk, dv = ks[2], vs[3]
        else:
            heads = _attr(node, "q_num_heads") or 1
            b, sq = qs[0], qs[1]
            h, dqk = heads, qs[2] // heads
            sk = ks[1]
            dv = vs[2] // (_attr(node, "kv_num_heads") or heads)
        return 2.0 * b * h * sq * sk * (dqk + dv)
    if node.op_type == "MultiHeadAttention" and (known := _concrete(q, k, v)) \
            and len(known[0]) == 3 and len(known[1]) == 3:
        (b, sq, hidden), ks, vs = known
        return 2.0 * b * sq * ks[1] * (hidden + vs[2])  # heads cancel: H·(hidden/H)
    if node.op_type == "Attention" and (known := _concrete(q, ins[1] if len(ins) > 1 else None)):
        # com.microsoft Attention: input [B,S,In], fused QKV weights [In, 3·Hidden]
        (b, s, width), w = known
        hidden = w[1] // 3
        projection = 2.0 * b * s * width * w[1]
        return projection + 2.0 * b * s * s * hidden * 2
    return None


# ONNX shape inference stops at ONNX Runtime's contrib ops (com.microsoft), which graph fusions
# introduce; these rules give their first output's shape so inference can go on past them.
_SAME_AS_FIRST_INPUT = {"SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "BiasGelu", "FastGelu",
                        "Gelu", "QuickGelu", "BiasAdd", "BiasSoftmax", "SimplifiedLayerNormalization",
                        "RotaryEmbedding", "LayerNormalization"}


def _contrib_output_shape(node: Any, shapes: dict[str, tuple[int | None, ...]]) -> Shape | None:
    ins = [shapes.get(name) if name else None for name in node.input]
    first = ins[0] if ins else None
    if node.op_type in _SAME_AS_FIRST_INPUT:
        return known[0] if (known := _concrete(first)) else None
    second = ins[1] if len(ins) > 1 else None
    if node.op_type == "Attention" and (known := _concrete(first, second)):
        x, w = known
        hidden = (_attr(node, "qkv_hidden_sizes") or [None, None, w[1] // 3])[2]
        return (x[0], x[1], int(hidden))
    if node.op_type == "MultiHeadAttention" and (known := _concrete(first, ins[2] if len(ins) > 2 else None)):
        x, value = known
        return (x[0], x[1], value[-1] if len(value) == 3 else value[1] * value[3])
    if node.op_type == "FusedMatMul" and (known := _concrete(first, second)):
        a, b = list(known[0]), list(known[1])
        if _attr(node, "transA", 0):
            a[-2], a[-1] = a[-1], a[-2]
        if _attr(node, "transB", 0):
            b[-2], b[-1] = b[-1], b[-2]
        lead = [max(x, y) for x, y in zip([1] * (len(b) - len(a)) + a[:-2], [1] * (len(a) - len(b)) + b[:-2])]
        return (*lead, a[-2], b[-1])
    return None


def _infer(model: Any) -> Any:
    """ONNX shape inference, resumed past contrib ops whose output shapes vlc knows (bounded)."""
    import onnx
    from onnx import helper

    contrib = sum(1 for node in model.graph.node if node.domain == "com.microsoft")
    for _ in range(contrib + 1):  # each round can unblock at least one more contrib node
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001 - keep whatever shapes the file carries
            return model
        shapes = _shapes(model)
        added = 0
        for node in model.graph.node:
            if node.domain != "com.microsoft" or not node.output or shapes.get(node.output[0]) is not None:
                continue
            shape = _contrib_output_shape(node, shapes)
            if shape is not None:
                elem = onnx.TensorProto.FLOAT
                for value in [*model.graph.value_info, *model.graph.input]:
                    if value.name == node.input[0]:
                        elem = value.type.tensor_type.elem_type
                model.graph.value_info.append(helper.make_tensor_value_info(node.output[0], elem, shape))
                added += 1
        if not added:
            return model
    return model


def _strip_weights(model: Any, keep_bytes: int = 4096) -> None:
    """Replace large initializers by typed graph inputs: inference needs their shapes, not their bytes.

    Small ones stay: shape inference reads their values (Reshape targets, slice bounds).
    """
    from onnx import helper

    keep: list[Any] = []
    dropped: list[Any] = []
    for init in model.graph.initializer:
        size = len(init.raw_data) or 4 * (len(init.float_data) + len(init.int64_data) * 2 + len(init.int32_data))
        (keep if size <= keep_bytes and not init.external_data else dropped).append(init)
    if not dropped:
        return
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    model.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in dropped)


def _inline(model: Any) -> Any:
    if not model.functions:
        return model
    from onnx import inliner

    return inliner.inline_local_functions(model)


def count_flops(model: Any, batch: int) -> FlopCount:
    """Count FLOPs of one call of an ONNX model (path or ModelProto) at `batch`."""
    import onnx

    if batch < 1:
        raise InputError(f"batch must be positive to count FLOPs, got {batch}")
    if isinstance(model, (str, Path)):
        path = Path(model)
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the same user error
            raise InputError(f"cannot read ONNX file {path} to count FLOPs ({type(exc).__name__})",
                             fix="pass a valid .onnx file") from None
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())  # never touch the caller's
    model = _inline(model)
    _strip_weights(model)
    del model.graph.value_info[:]  # drop stale shapes inferred at another batch size
    _fix_batch(model, batch)
    for out in model.graph.output:  # let inference recompute output shapes for this batch
        out.type.tensor_type.ClearField("shape")
    model = _infer(model)
    shapes = _shapes(model)
    total = 0.0
    by_op: defaultdict[str, float] = defaultdict(float)
    unresolved: list[str] = []
    uncounted: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in ("If", "Loop", "Scan") or (
                node.op_type == "Einsum" and (len(node.input) != 2 or "." in str(_attr(node, "equation", "")))):
            uncounted[node.op_type] += 1  # subgraphs and n-ary einsums: not counted, and said so
            continue
        flops = node_flops(node, shapes)
        if flops is None:
            unresolved.append(f"{node.op_type} {node.name or node.output[0]}")
            continue
        if flops:
            total += flops
            by_op[node.op_type] += flops
    return FlopCount(batch, total, dict(by_op), unresolved, dict(uncounted))


# ---- device peaks -----------------------------------------------------------------------------

PEAK_PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class Peak:
    tflops: float | None  # dense, no structured sparsity
    source: str  # the peak-table entry (with its citation) or "estimate: ..."


@cache
def peak_table() -> dict[str, Any]:
    text = resources.files("vlc.report").joinpath("device_peaks.json").read_text()
    return json.loads(text)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def find_device(device_name: str) -> dict[str, Any] | None:
    """The peak-table entry whose patterns match a device name (most specific pattern wins)."""
    name = _norm(device_name)
    best: tuple[int, dict[str, Any]] | None = None
    for entry in peak_table()["devices"]:
        for pattern in entry["match"]:
            if re.search(pattern, name) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), entry)
    return best[1] if best else None


SIMD_FLOPS_PER_CYCLE = (  # fp32 FLOPs per core per cycle: lanes x 2 (FMA) x FMA units
    ("avx512f", 64, "AVX-512, 2 FMA units x 16 lanes x 2"),
    ("avx2", 32, "AVX2, 2 FMA units x 8 lanes x 2"),
    ("sve", 32, "SVE (assumed 2 x 256-bit FMA) x 2"),
    ("asimd", 16, "NEON, 2 x 128-bit FMA units x 2"),
)


def cpu_peak(cpu: dict[str, Any], precision: str) -> Peak:
    """Estimated fp32 peak of the CPU cores this process may use; other precisions unknown.

    A peak must not be exceeded, so the estimate errs high: two full-width FMA units per core
    (cores that split 512-bit work in halves, such as AMD Zen 4, reach half of it), at the
    highest frequency the machine reports (boost clocks above a VM's nominal one are unseen).
    """
    if precision not in ("fp32",):
        return Peak(None, f"unknown: no CPU peak estimate for {precision}")
    simd = set(cpu.get("simd", []))
    ghz = cpu.get("max_ghz")
    cores = cpu.get("usable_cores") or cpu.get("physical_cores") or cpu.get("logical_cores")
    if not ghz or not cores:
        return Peak(None, "unknown: CPU frequency or core count not readable")
    for flag, per_cycle, how in SIMD_FLOPS_PER_CYCLE:
        if flag in simd:
            tflops = cores * ghz * 1e9 * per_cycle / 1e12
            return Peak(round(tflops, 4), f"upper estimate: {cores} cores x {ghz} GHz x {per_cycle} FLOP/cycle "
                                          f"({how}; {cpu.get('frequency_source', 'frequency')})")
    return Peak(None, "unknown: no known SIMD extension")


def device_peak(device_name: str, precision: str, environment: dict[str, Any] | None = None,
                device: str = "") -> Peak:
    """Dense peak TFLOP/s (TOPS for int8) of a device at a precision, when known."""
    entry = find_device(device_name)
    if entry is not None:
        value = entry["peak_tflops"].get(precision)
        label = f"{entry['name']} {precision} (dense): {entry['source']}"
        return Peak(value, label if value is not None else f"unknown: {entry['name']} lists no {precision} peak")
    if device.startswith("cpu") and environment and environment.get("cpu"):
        return cpu_peak(environment["cpu"], precision)
    return Peak(None, f"unknown: '{device_name}' is not in the peak table")


def utilisation(flops_per_sample: float | None, throughput_per_s: float | None,
                peak: Peak) -> tuple[float | None, float | None]:
    """(achieved TFLOP/s, share of peak) — None where an input is missing."""
    if not flops_per_sample or not throughput_per_s:
        return None, None
    achieved = flops_per_sample * throughput_per_s / 1e12
    share = achieved / peak.tflops if peak.tflops else None
    return achieved, share
