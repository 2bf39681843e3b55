"""What every Ascend build does before ATC, shared by compile and --emit bundles:
check the graph, apply the patches it needs per batch (or once for gears), prove the patched
graph still computes the same outputs in ONNX Runtime, and write the atc arguments."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlc import shape_choice
from vlc.accuracy import AccuracyReport, compare_outputs, default_tolerance
from vlc.ascend_patches.core import apply_patches
from vlc.errors import CompileError
from vlc.measure import onnx_cpu_outputs
from vlc.signature import Signature, onnx_signature
from vlc.spec import Precision, TargetSpec
from vlc.target import CompileSource
from vlc.targets.ascend.atc import AtcFiles, atc_args
from vlc.targets.ascend.options import AscendOptions
from vlc.targets.ascend.precision import search_build_islands
from vlc.targets.ascend.preflight import CheckReport, check, patch_context, raise_for_blocking


@dataclass
class PreparedBuild:
    name: str  # bs8, or gears
    batch: int | None  # None for a gear build
    onnx_path: Path
    signature: Signature  # of the patched graph
    patches: list[dict[str, Any]]
    parity: AccuracyReport
    parity_batch: int
    feeds: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    original_outputs: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    patched_outputs: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def args(self, model: str, output: str, opts: AscendOptions, files: AtcFiles) -> list[str]:
        return atc_args(model, output, opts, self.signature, self.batch, files)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "batch": self.batch, "onnx": self.onnx_path.name,
                "patches": self.patches, "parity_batch": self.parity_batch,
                "parity": self.parity.to_json()}


def ort_outputs(path: Path | str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A graph (the source or a patched one) in ONNX Runtime on the CPU: vlc.measure's reference."""
    return onnx_cpu_outputs(path, feeds)


def preflight(source: CompileSource, spec: TargetSpec, opts: AscendOptions, signature: Signature
              ) -> tuple[Any, CheckReport]:
    import onnx

    model = onnx.load(str(source.onnx_path))
    report = check(model, opts, spec, signature)
    raise_for_blocking(report, where=str(source.onnx_path))
    return model, report


def prepare_builds(source: CompileSource, spec: TargetSpec, opts: AscendOptions, signature: Signature,
                   out_dir: Path, log: Any = None) -> tuple[CheckReport, list[PreparedBuild]]:
    """Patch once per build into out_dir/model_<name>.onnx and check the numerics kept."""
    import onnx

    # dynamic non-batch dims nobody sized get sizes the graph accepts (warned, recorded in the check)
    spec, chosen, line = shape_choice.sized_spec(source.onnx_path, signature, spec,
                                                 input_specs=list(source.input_specs),
                                                 batches=opts.batches or opts.gears, log_line=log)
    model, report = preflight(source, spec, opts, signature)
    if line:
        report.notes.append(line)
    builds = []
    for name, batch in opts.builds:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        context = patch_context(opts, spec, batch)
        if chosen and batch is not None:
            context = replace(context, shapes={**context.shapes,
                                               **shape_choice.at_batch(signature, chosen, batch)})
        patched, records = apply_patches(copy, report.patches, context)
        path = out_dir / f"model_{name}.onnx"
        onnx.save(patched, str(path))
        parity_batch = batch if batch is not None else min(opts.gears)
        if chosen and source.model is None:  # inputs of the shapes this build was frozen to
            feeds = shape_choice.generate_feeds(signature, shape_choice.at_batch(signature, spec.shapes,
                                                                                 parity_batch),
                                                list(source.input_specs))
        else:
            feeds = source.generate_inputs(parity_batch, seed=0)
        original = ort_outputs(source.onnx_path, feeds)
        after = ort_outputs(path, feeds)
        parity = compare_outputs(after, original, default_tolerance(Precision.FP32))
        if not parity.passed:
            failing = "; ".join(f"{o.name}: {o.reason}" for o in parity.outputs if not o.passed)
            raise CompileError(f"the patched graph ({', '.join(report.patches)}) disagrees with the "
                               f"source graph in ONNX Runtime at batch {parity_batch}: {failing}",
                               where=str(path), fix="report it; drop the offending patch with "
                                                    "-O patches=-NAME to build without it")
        if log is not None:
            log(f"[{name}] patches: " + ", ".join(f"{r.name} ({r.changed})" for r in records))
            log(f"[{name}] parity with the source graph at batch {parity_batch}: passed "
                f"(worst {parity.worst()})")
        builds.append(PreparedBuild(name, batch, path, onnx_signature(patched),
                                    [r.to_json() for r in records], parity, parity_batch, feeds,
                                    original, after))
    if opts.islands == "auto":  # the fp32 nodes for ATC's keep_dtype file, from the patched graphs

        search_build_islands(builds, opts, out_dir, log)
    return report, builds
