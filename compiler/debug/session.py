"""`vlc debug accuracy` as a library call: resolve both sides, make the inputs, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from vlc.accuracy import Tolerance, default_tolerance, tolerance_with
from vlc.debug.graph import GraphRunner
from vlc.debug.layerwise import DEFAULT_WINDOW, LayerwiseReport, compare_layerwise
from vlc.debug.sources import DebugGraph, resolve
from vlc.errors import InputError


def debug_tolerance(candidate: DebugGraph, *, min_cosine: float | None = None, atol: float | None = None,
                    rtol: float | None = None) -> Tolerance:
    """The candidate's precision's tolerance, with the user's overrides."""
    return tolerance_with(default_tolerance(candidate.precision), atol=atol, rtol=rtol, min_cosine=min_cosine)


def debug_inputs(reference: DebugGraph, candidate: DebugGraph, *, files: Sequence[str | Path] = (),
                 batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs from `files`, else generated with spread: the model's own generator when either side
    knows it, else its input specs, else generic ones from the reference graph's signature."""
    from vlc.inputs import generate_inputs, load_inputs, nonfinite_notes
    from vlc.signature import onnx_signature

    signature = onnx_signature(reference.onnx_path)
    if files:
        feeds = load_inputs(files, signature)
        signature.validate_inputs(feeds)
        return feeds
    generator = reference.generator or candidate.generator
    specs = reference.input_specs or candidate.input_specs
    feeds = generate_inputs(specs, signature, batch, seed, generator=generator)
    if notes := nonfinite_notes(feeds):
        raise InputError(notes[0], fix="generated inputs should be finite; pass inputs with --input")
    return feeds


def _check_inputs_match(reference: GraphRunner, candidate: GraphRunner, labels: tuple[str, str]) -> None:
    initializers = {i.name for i in candidate.proto.graph.initializer}
    wanted = [i.name for i in candidate.proto.graph.input if i.name not in initializers]
    ref_initializers = {i.name for i in reference.proto.graph.initializer}
    given = {i.name for i in reference.proto.graph.input if i.name not in ref_initializers}
    if missing := [n for n in wanted if n not in given]:
        raise InputError(f"the candidate {labels[1]} takes input(s) {', '.join(missing)} that the reference "
                         f"{labels[0]} does not", fix="compare graphs of the same model (same input names)")


def debug_accuracy(reference: str | DebugGraph, candidate: str | DebugGraph, *,
                   inputs: Sequence[str | Path] = (), feeds: Mapping[str, np.ndarray] | None = None,
                   batch: int = 1, seed: int = 0, window: int = DEFAULT_WINDOW, bisect: bool = False,
                   min_cosine: float | None = None, atol: float | None = None, rtol: float | None = None,
                   cache_dir: Path | None = None) -> LayerwiseReport:
    """Every intermediate tensor of `candidate` against `reference` (each an ONNX file, an
    artifact directory or a model ref), and the first divergent node.

    With `bisect`, the first divergent tensor is found by bisection instead, marking at most
    `window` tensors per run, and only the probed tensors are reported."""
    ref = reference if isinstance(reference, DebugGraph) else resolve(reference, cache_dir=cache_dir)
    cand = candidate if isinstance(candidate, DebugGraph) else resolve(candidate, cache_dir=cache_dir)
    tolerance = debug_tolerance(cand, min_cosine=min_cosine, atol=atol, rtol=rtol)
    labels = (ref.label, cand.label)
    with GraphRunner(ref.onnx_path) as ref_run, GraphRunner(cand.onnx_path) as cand_run:
        _check_inputs_match(ref_run, cand_run, labels)
        if feeds is None:
            feeds = debug_inputs(ref, cand, files=inputs, batch=batch, seed=seed)
        if bisect:
            report = _bisected(ref_run, cand_run, feeds, tolerance, window, labels)
        else:
            report = compare_layerwise(ref_run, cand_run, feeds, tolerance, window=window, labels=labels)
    report.notes = [*ref.notes, *cand.notes, *report.notes]
    if not report.nodes:
        raise InputError(f"no intermediate tensor of {ref.label} has a counterpart in {cand.label}",
                         fix="compare graphs of the same model: the candidate must keep the reference's "
                             "tensor names (vlc's precision pass and Q/DQ insertion do)")
    if report.unmatched:
        report.notes.append(f"{len(report.unmatched)} reference tensor(s) have no counterpart in the candidate "
                            f"(fused or renamed), e.g. {', '.join(report.unmatched[:3])}")
    return report


def _bisected(ref_run: GraphRunner, cand_run: GraphRunner, feeds: Mapping[str, np.ndarray],
              tolerance: Tolerance, window: int, labels: tuple[str, str]) -> LayerwiseReport:
    """Bisection, then the numbers of the tensors it probed (one more run of each graph)."""
    from vlc.debug.bisect import bisect_graphs

    if window < 1:
        raise InputError(f"--window {window} must be >= 1", fix="mark at least one tensor per run")
    runs = ref_run.runs + cand_run.runs
    found = bisect_graphs(ref_run, cand_run, feeds, tolerance, max_outputs=window)
    probed = {t for t, _ in found.probes}
    report = compare_layerwise(ref_run, cand_run, feeds, tolerance, window=max(1, len(probed)),
                               labels=labels, only=probed)
    report.mode, report.found, report.window = "bisect", found.tensor, window
    report.runs = ref_run.runs + cand_run.runs - runs
    report.notes.append(f"bisection: {found.runs} runs of the candidate marking at most {window} tensor(s) "
                        f"each, {len(probed)} tensors probed")
    return report
