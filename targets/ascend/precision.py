"""islands=auto for Ascend fp16 builds: which nodes ATC must keep in fp32 (its --keep_dtype file).

ATC converts the graph to fp16 itself (force_fp16, or allow_mix_precision with -O fp32_ops);
--keep_dtype names nodes of the ONNX graph it is given that keep their original dtype. vlc runs
the shared search (vlc.frontend.precision.islands) on the patched graph of the first build, with
that build's inputs and the patched graph's own fp32 outputs as reference, checks the chosen set
on every other build, and writes the nodes (the kept islands and the nodes that follow them for
fp16's range) to AUTO_ISLANDS_FILE beside the builds; atc.write_side_files lists them in the
keep_dtype file. What ATC's fp16 kernels do inside an op is not modelled: the numbers are ONNX
Runtime's with every fp16 tensor rounded (and ranged) as stored, not the NPU's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlc.accuracy import compare_outputs, default_tolerance, tolerance_with
from vlc.errors import CompileError

AUTO_ISLANDS_FILE = "precision_islands.json"


def _goal(opts: Any):
    base = default_tolerance("fp16")
    return base if opts.accuracy is None else tolerance_with(base, min_cosine=opts.accuracy)


def search_build_islands(builds: list[Any], opts: Any, out_dir: Path,
                         log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Search on builds[0], verify on the rest, write AUTO_ISLANDS_FILE in `out_dir`; the record."""
    import onnx
    from onnx import TensorProto

    from vlc.frontend.precision.islands import ensure_node_names, search_islands  # local: loads onnx

    goal = _goal(opts)
    models = []
    for b in builds:  # keep_dtype lists node names: every node needs one (names leave numerics alone)
        model = onnx.load(str(b.onnx_path))
        if ensure_node_names(model):
            onnx.save(model, str(b.onnx_path))
        models.append(model)
    first = builds[0]
    search = search_islands(models[0], TensorProto.FLOAT16, first.feeds, first.patched_outputs, goal,
                            inputs=f"build {first.name}'s inputs (batch {first.parity_batch}, seed 0)")
    fp32 = list(dict.fromkeys(search.chosen + search.followers))
    verified = {first.name: _verify(models[0], first, fp32, goal)}
    for b, model in zip(builds[1:], models[1:]):
        verified[b.name] = _verify(model, b, fp32, goal)
        if not verified[b.name]["passed"]:  # this build needs more: search it and keep the union
            extra = search_islands(model, TensorProto.FLOAT16, b.feeds, b.patched_outputs, goal,
                                   inputs=f"build {b.name}'s inputs")
            fp32 = list(dict.fromkeys(fp32 + extra.chosen + extra.followers))
            verified[b.name] = _verify(model, b, fp32, goal)
    for b, model in zip(builds, models):  # every listed name exists in every build
        missing = [n for n in fp32 if n not in {m.name for m in model.graph.node}]
        if missing:
            raise CompileError(f"islands=auto chose nodes that build {b.name}'s graph lacks: "
                               f"{', '.join(missing[:5])}", where=str(b.onnx_path),
                               fix="build one batch size at a time (-O batches=[N]) or use -O islands=static")
    record = {"mode": "auto", "fp32_nodes": fp32, "keep_dtype": "the nodes above, one per line, in ATC's "
              "--keep_dtype file (original dtype: fp32)", "search_build": first.name,
              "search": search.to_json(), "builds": verified}
    (Path(out_dir) / AUTO_ISLANDS_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    if log is not None:
        log(f"islands=auto: {len(fp32)} nodes kept in fp32 by --keep_dtype (static islands "
            f"{search.static_nodes}); {search.evaluations} runs in {search.seconds:.1f} s")
    return record


def _verify(model: Any, build: Any, fp32: list[str], goal: Any) -> dict[str, Any]:
    """The chosen fp32 set on another build's graph: converted, emulated, compared."""
    from onnx import TensorProto

    from vlc.frontend.precision.check import emulate_low_precision, run_onnx  # local: loads onnx
    from vlc.frontend.precision.lowp import TYPE_FIXED_OPS, to_low_precision  # local: loads onnx

    converted, _ = to_low_precision(model, TensorProto.FLOAT16, TYPE_FIXED_OPS, keep_nodes=fp32,
                                    layernorm_islands=False)
    report = compare_outputs(run_onnx(emulate_low_precision(converted, TensorProto.FLOAT16), build.feeds),
                             build.patched_outputs, goal)
    worst = report.worst()
    return {"passed": report.passed, "min_cosine": worst["min_cosine"], "max_abs": worst["max_abs"],
            "median_rel": worst["median_rel"]}


def auto_keep_dtype(opts: Any, directory: Path) -> tuple[str, ...]:
    """The nodes search_build_islands chose for this build directory ((): islands=static)."""
    if getattr(opts, "islands", "static") != "auto":
        return ()
    path = Path(directory) / AUTO_ISLANDS_FILE
    if not path.is_file():
        raise CompileError("islands=auto has no chosen nodes to list", where=str(path),
                           fix="report this as a vlc bug (the builds are prepared before the side files)")
    return tuple(json.loads(path.read_text())["fp32_nodes"])
