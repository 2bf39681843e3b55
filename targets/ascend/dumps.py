"""An Ascend bundle's op dumps (dump.sh) read back and compared, op by op, with the graph ATC
compiled, run in fp32 in ONNX Runtime on the same inputs: vlc debug accuracy for a .om.

What the files look like follows the CANN documentation (none of it met a device here):
- msaccucmp.py `convert` names each tensor of a dump file
  `<op_type>.<op_name>.<task_id>.<stream_id>.<timestamp>[.more digits].<output|input>.<k>.<shape>.npy`,
  with '.', '/', '\\' and spaces in op types and names written as '_';
- `atc --mode=1` writes the .om's ops as JSON: graph[].op[] with `name`, `type`, the attribute
  `_datadump_original_op_names` (the ONNX nodes a fused op computes) and, per output_desc,
  `_datadump_origin_name` / `_datadump_origin_output_index` (which ONNX node output it holds);
- ATC names ops after the ONNX nodes, a fused op by concatenating their names;
- a device may hold a tensor in NC1HWC0 (5HD: channels in blocks of C0) or FRACTAL_NZ (the last
  two axes in 16x16 fractals); msaccucmp without -f keeps that layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlc.accuracy import default_tolerance
from vlc.errors import InputError

OUTPUT_RE = re.compile(r"^(?P<type>[^.]+)\.(?P<name>[^.]+)\.(?P<ids>\d+(?:\.\d+)*)\.output\.(?P<index>\d+)"
                       r"(?:\.(?P<shape>[0-9x]*))?\.npy$")


def sanitized(name: str) -> str:
    """An op type or name as it appears in a dump file name."""
    return re.sub(r"[./\\ ]", "_", name)


@dataclass(frozen=True)
class DumpedOutput:
    op_type: str
    op_name: str  # as in the file name (sanitized)
    index: int
    path: Path


def converted_outputs(folder: Path) -> tuple[dict[str, dict[int, DumpedOutput]], list[str]]:
    """The converted output tensors in `folder`, by op name (as in the file names) and output
    index, and notes on files that were left out."""
    found: dict[str, dict[int, DumpedOutput]] = {}
    repeated = 0
    for path in sorted(folder.glob("*.npy")):
        m = OUTPUT_RE.match(path.name)
        if m is None:
            continue  # inputs (dump_mode all), or files this reader does not know
        per_op = found.setdefault(m["name"], {})
        index = int(m["index"])
        if index in per_op:
            repeated += 1  # one op dumped by several tasks: the first task's is kept
            continue
        per_op[index] = DumpedOutput(m["type"], m["name"], index, path)
    notes = [f"{repeated} output(s) dumped more than once (several tasks of one op); the first task's is compared"
             ] if repeated else []
    return found, notes


@dataclass
class OmOp:
    """One op of the .om as `atc --mode=1` describes it."""

    name: str
    type: str
    original: list[str] = field(default_factory=list)  # _datadump_original_op_names
    origins: list[tuple[str, int] | None] = field(default_factory=list)  # per output: (ONNX node, output index)


def _attrs(items: Any) -> dict[str, Any]:
    return {str(a.get("key")): a.get("value") or {} for a in items or [] if isinstance(a, dict)}


def read_model_json(path: Path) -> list[OmOp]:
    """The ops of `atc --mode=1`'s JSON (one line of error for a file that is not one)."""
    try:
        data = json.loads(path.read_text())
        graphs = data["graph"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read {path} as the JSON `atc --mode=1` writes: {type(exc).__name__}: {exc}",
                         fix="write it again with `atc --mode=1 --om=MODEL.om --json=FILE`, or remove it to "
                             "map dumped ops by name") from None
    ops = []
    for graph in graphs:
        for op in graph.get("op", []):
            attrs = _attrs(op.get("attr"))
            original = [str(s) for s in ((attrs.get("_datadump_original_op_names") or {}).get("list") or {})
                        .get("s", []) if s]
            origins: list[tuple[str, int] | None] = []
            for desc in op.get("output_desc") or []:
                d = _attrs(desc.get("attr"))
                name = (d.get("_datadump_origin_name") or {}).get("s")
                index = (d.get("_datadump_origin_output_index") or {}).get("i")
                origins.append((str(name), int(index or 0)) if name else None)
            ops.append(OmOp(str(op.get("name", "")), str(op.get("type", "")), original, origins))
    return ops


@dataclass(frozen=True)
class MappedTensor:
    """A dumped output standing for one tensor of the ONNX graph."""

    tensor: str
    path: Path
    op: str  # the .om op that wrote it
    output: int  # which of its outputs
    covers: tuple[str, ...]  # the ONNX nodes that op computes


def map_dumps(dumped: Mapping[str, Mapping[int, DumpedOutput]], nodes: Sequence[Any],
              ops: Sequence[OmOp] | None = None) -> tuple[dict[str, MappedTensor], list[str]]:
    """Each dumped output's ONNX tensor: through the .om JSON's _datadump_* attributes when
    given, else by name (an op named after a node, or after several concatenated, computes
    them, and its output is the last one's). Returns the mapping and the op names left unmapped."""
    by_name = {n.name: n for n in nodes}
    by_file_name: dict[str, Any] = {}
    for n in nodes:
        by_file_name.setdefault(sanitized(n.name), n)
    order = {n.name: n.index for n in nodes}
    described = {sanitized(op.name): op for op in ops or []}
    mapped: dict[str, MappedTensor] = {}
    unmapped = []
    for op_name, outputs in dumped.items():
        op = described.get(op_name)
        covered = [by_name[o] for o in (op.original if op else []) if o in by_name]
        if not covered:
            node = by_file_name.get(op_name)
            covered = [node] if node is not None else _concatenated(op_name, by_file_name)
        if not covered:
            unmapped.append(op_name)
            continue
        last = max(covered, key=lambda n: order[n.name])
        covers = tuple(n.name for n in sorted(covered, key=lambda n: order[n.name]))
        for index, item in outputs.items():
            origin = op.origins[index] if op is not None and index < len(op.origins) else None
            if origin is not None and origin[0] in by_name and origin[1] < len(by_name[origin[0]].outputs):
                tensor = by_name[origin[0]].outputs[origin[1]]
            elif index < len(last.outputs):
                tensor = last.outputs[index]
            else:
                continue
            mapped.setdefault(tensor, MappedTensor(tensor, item.path, op.name if op else op_name, index, covers))
    return mapped, unmapped


def _concatenated(op_name: str, by_file_name: Mapping[str, Any]) -> list[Any]:
    """The nodes whose (file-name form) names, concatenated, make `op_name` (ATC's name for a
    fused op), or [] when no split works; the split into the fewest names is taken."""
    best: dict[int, list[str] | None] = {0: []}
    for end in range(1, len(op_name) + 1):
        options = [[*(best[start] or []), op_name[start:end]] for start in range(end)
                   if best.get(start) is not None and op_name[start:end] in by_file_name]
        best[end] = min(options, key=len) if options else None
    parts = best[len(op_name)]
    return [by_file_name[p] for p in parts] if parts and len(parts) > 1 else []


def to_reference_layout(array: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray | None, str]:
    """`array` as the ONNX tensor of `shape`, undoing a device layout: (array, how) or (None,
    why not). NC1HWC0 -> NCHW and FRACTAL_NZ -> ND drop the padding of the last block; a plain
    reshape only where axes of size 1 differ (a same-size reshape could scramble a layout)."""
    shape = tuple(int(d) for d in shape)
    if array.shape == shape:
        return array, ""
    if array.ndim == 5 and len(shape) == 4:  # NC1HWC0
        n, c1, h, w, c0 = array.shape
        if (n, h, w) == (shape[0], shape[2], shape[3]) and c1 * c0 >= shape[1] > (c1 - 1) * c0:
            nchw = array.transpose(0, 1, 4, 2, 3).reshape(n, c1 * c0, h, w)
            return np.ascontiguousarray(nchw[:, :shape[1]]), "NC1HWC0"
    if array.ndim == len(shape) + 2 and len(shape) >= 2:  # FRACTAL_NZ: (..., N1, M1, M0, N0) holds (..., M, N)
        *batch, n1, m1, m0, n0 = array.shape
        m, n = shape[-2:]
        if tuple(batch) == shape[:-2] and m1 * m0 >= m > (m1 - 1) * m0 and n1 * n0 >= n > (n1 - 1) * n0:
            nd = np.moveaxis(array, -4, -2).reshape(*batch, m1 * m0, n1 * n0)
            return np.ascontiguousarray(nd[..., :m, :n]), "FRACTAL_NZ"
    if tuple(d for d in array.shape if d != 1) == tuple(d for d in shape if d != 1):
        return array.reshape(shape), "reshaped"  # only axes of size 1 differ
    return None, f"dumped shape {list(array.shape)} is no known layout of {list(shape)}"


# ---- the comparison --------------------------------------------------------------------------
@dataclass
class BuildDump:
    """Where one build's dump of one batch lies in a bundle."""

    build: str
    batch: int
    onnx: Path  # the graph ATC compiled
    npy: Path  # msaccucmp's converted files
    model_json: Path | None


def compare_dump(dump: BuildDump, meta: Mapping[str, Any], root: Path, *, window: int = 64,
                 tolerance: Any = None) -> Any:
    """The layer-wise report (vlc.debug.LayerwiseReport) of one dumped build."""
    from onnx.helper import tensor_dtype_to_np_dtype

    from vlc.debug.graph import GraphRunner, compared_tensors, topological_nodes  # local: loads onnx
    from vlc.debug.layerwise import compare_tensors  # local: loads onnx

    dumped, notes = converted_outputs(dump.npy)
    if not dumped:
        raise InputError(f"{dump.npy} holds no converted dump outputs (<op_type>.<op_name>...output.<k>...npy)",
                         fix="run dump.sh on the Ascend machine (it converts the dumps with msaccucmp.py)")
    ops = read_model_json(dump.model_json) if dump.model_json is not None else None
    names = [t["name"] for t in meta["signature"]["inputs"]]
    with GraphRunner(dump.onnx) as reference:
        types = {i.name: i.type.tensor_type.elem_type for i in reference.proto.graph.input}
        feeds = {}
        for i, name in enumerate(names):
            array = np.load(root / "inputs" / f"bs{dump.batch}" / f"in{i}.npy")
            feeds[name] = array.astype(tensor_dtype_to_np_dtype(types[name])) if types.get(name) else array
        nodes = topological_nodes(reference.proto.graph)
        mapped, unmapped = map_dumps(dumped, nodes, ops)
        tensors = compared_tensors(reference.proto, nodes)
        kept = [(n, t) for n, t in tensors if t in mapped]
        layouts: dict[str, int] = {}
        skipped: list[str] = []

        def fetch(wanted: Sequence[str], ref_values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            values = {}
            for name in wanted:
                array, how = to_reference_layout(np.load(mapped[name].path), np.asarray(ref_values[name]).shape)
                if array is None:
                    skipped.append(f"{name} ({how})")
                    continue
                if how:
                    layouts[how] = layouts.get(how, 0) + 1
                values[name] = array
            return values

        tol = tolerance or default_tolerance(meta["precision"])
        report = compare_tensors(
            reference, feeds, nodes, kept, {t: f"{m.op}:{m.output}" for t, m in mapped.items()}, fetch,
            tol, window=window, labels=(f"{dump.onnx.name} (fp32, ONNX Runtime CPU)",
                                        f"{dump.build} .om dump at batch {dump.batch}"),
            unmatched=[t for _, t in tensors if t not in mapped],
            covers={t: m.covers for t, m in mapped.items()})
    report.notes += [
        f"reference: {dump.onnx.name}, the graph ATC compiled (the source graph after vlc's Ascend patches, "
        "which match it in fp32), run in ONNX Runtime on the bundle's inputs; candidate: the op outputs the "
        f"device dumped ({dump.npy.relative_to(root)})",
        "dumped ops mapped to ONNX tensors through " + (
            f"{dump.model_json.relative_to(root)} (atc --mode=1)" if dump.model_json is not None
            else "their names only (no atc --mode=1 JSON beside the .om)"),
        *notes]
    if unmapped:
        report.notes.append(f"{len(unmapped)} dumped op(s) name no ONNX node (inserted by ATC, e.g. TransData/Cast), "
                            f"e.g. {', '.join(unmapped[:3])}")
    if layouts:
        report.notes.append("converted from device layouts: " + ", ".join(f"{k} x{v}" for k, v in layouts.items()))
    if skipped:
        report.notes.append(f"{len(skipped)} dumped tensor(s) left out: {'; '.join(skipped[:3])}")
    if report.unmatched:
        report.notes.append(f"{len(report.unmatched)} tensor(s) of the graph have no dump (computed inside fused "
                            f"ops, or not dumped), e.g. {', '.join(report.unmatched[:3])}")
    return report


def bundle_dumps(root: Path, meta: Mapping[str, Any]) -> tuple[list[BuildDump], list[str]]:
    """The builds whose dumps dump.sh left converted, and what is missing for the rest of those
    it started (a bundle whose dump.sh never ran, or one written before dump.sh, has none)."""
    found, missing = [], []
    for build in meta["builds"]:
        batch = build.get("dump_batch")
        if batch is None:
            continue
        here = root / "results" / "dump" / f"bs{batch}"
        if not here.is_dir():
            continue
        npy = here / "npy"
        if not npy.is_dir() or not any(npy.glob("*.npy")):
            raw = here / "dump"
            missing.append(f"results/dump/bs{batch}/npy (" + (
                "convert the dumps: python3 msaccucmp.py convert -d <folder of the dump files> -out "
                f"results/dump/bs{batch}/npy" if raw.is_dir() and any(p.is_file() for p in raw.rglob("*"))
                else f"dump.sh wrote no dump; see results/dump/bs{batch}.log") + ")")
            continue
        model_json = root / build["model_json"] if build.get("model_json") else None
        found.append(BuildDump(build["name"], batch, root / build["onnx"], npy,
                               model_json if model_json is not None and model_json.is_file() else None))
    return found, missing
