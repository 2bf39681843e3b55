"""`vlc debug accuracy` as a library call: resolve both sides, make the inputs, compare."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from vlc.accuracy import Tolerance, default_tolerance, tolerance_with
from vlc.debug.bisect import bisect_graphs, bisect_rebuilt
from vlc.debug.compiled import RebuiltCandidate
from vlc.debug.graph import GraphRunner
from vlc.debug.layerwise import DEFAULT_WINDOW, LayerwiseReport, compare_layerwise, compare_tensors
from vlc.debug.sources import DebugGraph, resolve
from vlc.errors import InputError
from vlc.inputs import generate_inputs, load_inputs, nonfinite_notes
from vlc.signature import onnx_signature


def debug_tolerance(candidate: DebugGraph, *, min_cosine: float | None = None, atol: float | None = None,
                    rtol: float | None = None) -> Tolerance:
    """The candidate's precision's tolerance, with the user's overrides."""
    return tolerance_with(default_tolerance(candidate.precision), atol=atol, rtol=rtol, min_cosine=min_cosine)


def debug_inputs(reference: DebugGraph, candidate: DebugGraph, *, files: Sequence[str | Path] = (),
                 batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs from `files`, else generated with spread: the model's own generator when either side
    knows it, else its input specs, else generic ones from the reference graph's signature."""
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
                   cache_dir: Path | None = None, rebuild: bool | None = None) -> LayerwiseReport:
    """Every intermediate tensor of `candidate` against `reference` (each an ONNX file, an
    artifact directory or a model ref), and the first divergent node.

    With `bisect`, the first divergent tensor is found by bisection instead, marking at most
    `window` tensors per run, and only the probed tensors are reported. A candidate artifact whose
    compiled file hides its intermediates (a TensorRT engine, an Ascend .om) is then bisected by
    rebuilding it with the marked tensors as extra outputs through its own target, which must run
    here; `rebuild` forces (True) or refuses (False) that for any artifact."""
    ref = reference if isinstance(reference, DebugGraph) else resolve(reference, cache_dir=cache_dir)
    cand = candidate if isinstance(candidate, DebugGraph) else resolve(candidate, cache_dir=cache_dir)
    tolerance = debug_tolerance(cand, min_cosine=min_cosine, atol=atol, rtol=rtol)
    labels = (ref.label, cand.label)
    if rebuild and not bisect:
        raise InputError("--rebuild probes a compiled artifact by bisection", fix="add --bisect")
    if rebuild and cand.kind != "artifact":
        raise InputError(f"--rebuild needs a compiled artifact as the candidate, not {cand.label}",
                         fix="pass the directory written by `vlc compile`, or leave out --rebuild")
    rebuilt = bisect and cand.kind == "artifact" and (rebuild if rebuild is not None else cand.hides_intermediates)
    with GraphRunner(ref.onnx_path) as ref_run, GraphRunner(cand.onnx_path) as cand_run:
        _check_inputs_match(ref_run, cand_run, labels)
        if feeds is None:
            feeds = debug_inputs(ref, cand, files=inputs, batch=batch, seed=seed)
        if rebuilt:
            report = _bisected_rebuilt(ref_run, cand, feeds, tolerance, window, labels)
        elif bisect:
            report = _bisected(ref_run, cand_run, feeds, tolerance, window, labels)
        else:
            report = compare_layerwise(ref_run, cand_run, feeds, tolerance, window=window, labels=labels)
    # the built-from-graph note does not hold when the compiled file itself was probed
    report.notes = [*ref.notes, *([] if rebuilt else cand.notes), *report.notes]
    if cand.hides_intermediates and not bisect:
        report.notes.append("--bisect probes the compiled file itself, rebuilding it with marked outputs "
                            "(needs its target to run here)")
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


def _bisected_rebuilt(ref_run: GraphRunner, cand: DebugGraph, feeds: Mapping[str, np.ndarray],
                      tolerance: Tolerance, window: int, labels: tuple[str, str]) -> LayerwiseReport:
    """Bisection against the compiled artifact itself: one rebuild with marked outputs per probe,
    then the numbers of every probed tensor from the values those runs returned."""
    if window < 1:
        raise InputError(f"--window {window} must be >= 1", fix="mark at least one tensor per run")
    runs = ref_run.runs
    with RebuiltCandidate(cand.artifact) as candidate:
        found, seen, p = bisect_rebuilt(ref_run, candidate, feeds, tolerance, max_outputs=window)
        builds = candidate.builds
    probed = [(n, t) for n, t in p.tensors if t in seen]
    report = compare_tensors(ref_run, feeds, p.nodes, probed, p.matched,
                             lambda names, _: {t: seen[t] for t in names}, tolerance,
                             window=max(1, len(probed)), labels=labels, unmatched=p.unmatched)
    report.mode, report.found, report.window = "bisect", found.tensor, window
    report.runs = ref_run.runs - runs + builds
    report.notes.append(
        f"bisection on the compiled {cand.artifact.target} file: {builds} rebuild(s) from its source graph with at "
        f"most {window} tensor(s) marked as outputs each, run through the target; {len(probed)} tensors probed. "
        "A marked tensor is not fused across, so each rebuilt file differs from the original where it is marked")
    return report
