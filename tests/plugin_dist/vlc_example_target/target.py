"""The `onnx-reference` target: the normalized ONNX graph in onnx's reference interpreter.

`onnx.reference.ReferenceEvaluator` implements the ONNX operators in numpy, after the
specification and independent of ONNX Runtime's kernels, so it is a third opinion on what a
graph computes. It is slow: for checking numerics on small inputs, not for deployment.

Only vlc's public target interface is used (`vlc.target`, `vlc.artifact`, `vlc.spec`,
`vlc.errors`, `vlc.onnx_files`), and onnx is imported inside the methods that need it so that
`vlc targets` does not pay for it.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from vlc.artifact import Artifact, BuildDir
from vlc.errors import CompileError, first_line
from vlc.onnx_files import copy_onnx
from vlc.spec import Precision, TargetSpec
from vlc.target import Availability, CompileSource, OptionInfo, Session, Target, batch_range
from vlc_example_target.session import ReferenceSession

if TYPE_CHECKING:
    from onnx.reference import ReferenceEvaluator

GRAPH = "model.onnx"


def evaluator(path: Path, checked: bool) -> ReferenceEvaluator:
    """A ReferenceEvaluator of the graph at `path`; an operator it lacks is a CompileError naming it."""
    from onnx.reference import ReferenceEvaluator

    try:
        return ReferenceEvaluator(str(path), check_shape_annotations=checked)
    except NotImplementedError as exc:  # an operator (or domain) the interpreter does not implement
        raise CompileError(f"onnx's reference interpreter cannot run this graph: {first_line(exc)}",
                           fix="use --target onnxruntime, or a graph of standard ONNX operators") from None


def graph_operators(path: Path) -> list[str]:
    """The operator types of the graph's top level (what the build log and manifest list)."""
    import onnx

    return sorted({node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node})


class OnnxReferenceTarget(Target):
    name = "onnx-reference"
    summary = ("onnx's reference interpreter (onnx.reference, numpy) on the CPU: the ONNX "
               "specification's own numerics, slow; an example plugin (tests/plugin_dist)")
    precisions = (Precision.FP32,)
    devices = ("cpu",)
    options = {"check_shapes": OptionInfo(
        "on/off (default off): check every computed tensor against the shapes the graph declares "
        "while running (onnx's check_shape_annotations)", bool, False)}

    def available(self) -> Availability:
        # the version from package metadata: importing onnx here would slow `vlc targets` down
        if importlib.util.find_spec("onnx") is None:
            return Availability(False, "onnx is not installed; pip install onnx")
        return Availability(True, versions={"onnx": metadata.version("onnx")}, devices=["cpu"])

    def _compile(self, source: CompileSource, spec: TargetSpec, build: BuildDir) -> None:
        """Copy the graph in and prove the interpreter loads and runs it at the opt batch."""
        copied = copy_onnx(source.onnx_path, build.path / GRAPH, keep_locations=True)
        build.files["main"] = GRAPH
        checked = bool(spec.options["check_shapes"])  # typed by the base class from the schema
        session = ReferenceSession(evaluator(build.path / GRAPH, checked))
        allowed = batch_range(spec, source.signature)
        batch = spec.batch[1] if spec.batch else (allowed[0] if allowed else 1)
        try:
            session.run(source.generate_inputs(batch, seed=0))
        except Exception as exc:  # noqa: BLE001 - any failure of the interpreter is the graph's
            raise CompileError(f"onnx's reference interpreter fails on this graph at batch {batch}: "
                               f"{first_line(exc, with_type=True)}",
                               fix="rerun with --debug; -O check_shapes=on names a tensor of the wrong shape") from None
        operators = graph_operators(build.path / GRAPH)
        build.extra["onnx_reference"] = {"check_shapes": checked, "operators": operators}
        build.log(f"copied the graph as {GRAPH} ({len(copied)} file(s)); the interpreter ran batch "
                  f"{batch} ({len(operators)} operator types: {', '.join(operators)})")

    def _open(self, artifact: Artifact) -> Session:
        checked = bool(artifact.manifest["extra"]["onnx_reference"]["check_shapes"])
        return ReferenceSession(evaluator(artifact.file("main"), checked))
