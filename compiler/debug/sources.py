"""What `vlc debug accuracy` compares: an ONNX file, an artifact directory or a model ref, each
resolved to the ONNX graph that runs, its precision and how to generate its inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlc.artifact import Artifact
from vlc.errors import InputError, first_line
from vlc.frontend.feeds import source_generator
from vlc.frontend.pipeline import META_INPUT_SPECS, prepare
from vlc.model import InputSpec

InputGenerator = Callable[[int, int], dict[str, np.ndarray]]

# Where an artifact keeps the ONNX graph its compiled file was built from: TensorRT's "graph",
# Ascend's "onnx_<build>" (an onnxruntime artifact runs its ONNX "main" itself).
_BUILT_FROM = ("graph",)
_BUILT_FROM_PREFIX = "onnx_"


@dataclass
class DebugGraph:
    """One side of a comparison: the ONNX graph run in ONNX Runtime and what it stands for."""

    label: str  # as the user typed it
    onnx_path: Path
    kind: str  # "onnx", "artifact" or "model"
    precision: str  # fp32, fp16, bf16 or int8 (the tolerance follows it)
    notes: list[str] = field(default_factory=list)
    input_specs: list[InputSpec] | None = None
    generator: InputGenerator | None = None
    artifact: Any = None  # the Artifact, for an artifact directory

    @property
    def hides_intermediates(self) -> bool:
        """An artifact whose compiled file (a TensorRT engine, an Ascend .om) is not the ONNX graph
        compared in its place: only rebuilding it with marked outputs probes the file itself."""
        return self.kind == "artifact" and self.onnx_path.name != str(
            self.artifact.manifest.files.get("main", ""))


def graph_precision(proto: Any) -> str:
    """The precision an ONNX graph computes in: int8 with Q/DQ nodes, fp16/bf16 with such
    initializers or casts, else fp32."""
    from onnx import TensorProto

    ops = {n.op_type for n in proto.graph.node}
    if "QuantizeLinear" in ops or "DequantizeLinear" in ops or "QLinearConv" in ops:
        return "int8"
    types = {t.data_type for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Cast":
            types.update(a.i for a in node.attribute if a.name == "to")
    if TensorProto.FLOAT16 in types:
        return "fp16"
    if TensorProto.BFLOAT16 in types:
        return "bf16"
    return "fp32"


def _load_proto(path: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a file that is not ONNX
        raise InputError(f"cannot read {path} as an ONNX model: {first_line(exc, with_type=True)}",
                         fix="pass an .onnx file, an artifact directory or a model ref") from None


def _specs_in_graph(proto: Any) -> list[InputSpec] | None:
    """Input specs vlc's front end wrote into the graph, if any."""
    import json

    meta = {p.key: p.value for p in proto.metadata_props}
    if META_INPUT_SPECS not in meta:
        return None
    try:
        return [InputSpec.from_json(s) for s in json.loads(meta[META_INPUT_SPECS])]
    except (ValueError, KeyError, TypeError):
        return None


def _onnx_file(text: str, path: Path) -> DebugGraph:
    proto = _load_proto(path)
    return DebugGraph(text, path, "onnx", graph_precision(proto), input_specs=_specs_in_graph(proto))


def artifact_graph(artifact: Any) -> tuple[Path, list[str]]:
    """The ONNX graph an artifact runs (onnxruntime), or the graph its compiled file was built from
    (a TensorRT engine, an Ascend .om) with a note saying that file hides its intermediates."""
    files = artifact.manifest.files
    main = str(files.get("main", ""))
    if main.lower().endswith(".onnx") and (artifact.path / main).is_file():
        return artifact.path / main, []
    names = [files[k] for k in (*_BUILT_FROM, *sorted(k for k in files if k.startswith(_BUILT_FROM_PREFIX)))
             if k in files]
    precision = artifact.manifest.extra.get("precision") or {}
    if isinstance(precision, dict) and precision.get("output"):
        names.append(str(precision["output"]))  # the precision pass's graph, before plugin fusion
    existing = [n for n in dict.fromkeys(names) if (artifact.path / n).is_file()]
    # a graph with fused plugin operators does not run in ONNX Runtime: take one without them
    runnable = [n for n in existing if _standard_ops(artifact.path / n)] or existing
    if runnable:
        return artifact.path / runnable[0], [
            f"{main} ({artifact.target}) cannot expose its intermediate tensors; comparing the graph it "
            f"was built from ({runnable[0]}) in ONNX Runtime"]
    raise InputError(f"the {artifact.target} artifact {artifact.path} keeps no ONNX graph that runs, so its "
                     "intermediate tensors cannot be exposed",
                     fix="pass the ONNX graph or model ref it was compiled from instead")


def _standard_ops(path: Path) -> bool:
    """Whether every node is an ONNX (or ONNX Runtime contrib) operator."""
    try:
        proto = _load_proto(path)
    except InputError:
        return False
    return all(n.domain in ("", "ai.onnx", "com.microsoft") for n in proto.graph.node)


def _artifact(text: str, path: Path) -> DebugGraph:
    artifact = Artifact.load(path)
    if artifact.manifest.is_bundle:
        raise InputError(f"{path} is a {artifact.target} deploy bundle: its compiled files are built and run on "
                         "another machine, so nothing here can be compared",
                         fix="run its scripts where the target runs and import the results (Ascend: compile.sh and "
                             f"dump.sh, then `vlc ascend import {path}` compares every dumped op)")
    graph, notes = artifact_graph(artifact)
    source = artifact.manifest.source
    specs = list(source.input_specs) or None
    return DebugGraph(text, graph, "artifact", artifact.manifest.precision, notes,
                      input_specs=specs, generator=source_generator(source.ref), artifact=artifact)


def _model_ref(text: str, cache_dir: Path | None) -> DebugGraph:
    source = prepare(text, cache_dir)
    generator = source.model.generate_inputs if source.model is not None else None
    return DebugGraph(text, Path(source.onnx_path), "model", "fp32", input_specs=list(source.input_specs),
                      generator=generator)


def resolve(text: str, *, cache_dir: Path | None = None) -> DebugGraph:
    """An ONNX file, an artifact directory (with manifest.json) or a model ref, as a DebugGraph."""
    path = Path(text)
    if path.is_dir():
        return _artifact(text, path)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise InputError(f"ONNX file {path} does not exist", fix="check the path")
        return _onnx_file(text, path)
    if path.is_file():
        raise InputError(f"{path} is neither an .onnx file nor an artifact directory",
                         fix="pass an .onnx file, a directory written by `vlc compile`, or a model ref")
    return _model_ref(text, cache_dir)
