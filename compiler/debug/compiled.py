"""Probing a compiled artifact that cannot expose its intermediate tensors (a fused TensorRT
engine, an Ascend .om): rebuild it from its source graph with chosen tensors marked as extra
outputs, through its own target (`compile`, `open`, `run`), and read them from the rebuilt file.

Marking a tensor stops the compiler from fusing across it, so a rebuilt file is not the original
one: a divergence that needs a fusion spanning a marked tensor shows at the next unmarked one, and
each probe pays one full build. Bisection keeps the number of builds at O(log n).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import InputError
from vlc.plugin_manager import get_target
from vlc.target import CompileSource


def source_graph(artifact: Any) -> Path:
    """The fp32 source graph an artifact was compiled from (kept in the artifact by `compile`)."""
    name = artifact.manifest.source.onnx
    path = artifact.path / str(name) if name else None
    if path is None or not path.is_file():
        raise InputError(f"the {artifact.target} artifact {artifact.path} keeps no source graph to rebuild it from",
                         fix="recompile it with this vlc (`vlc compile --force`), which keeps source.onnx")
    return path


def with_outputs(proto: Any, names: Sequence[str]) -> Any:
    """A copy of `proto` whose graph also outputs `names` (typed from shape inference where it can
    tell, so a target's signature and precision pass see them like any other output)."""
    import onnx

    marked = onnx.ModelProto()
    marked.CopyFrom(proto)
    existing = {o.name for o in marked.graph.output}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        infos = {v.name: v for v in inferred.graph.value_info}
    except Exception:  # noqa: BLE001 - a graph the inferencer rejects: outputs typed as float below
        infos = {}
    for name in names:
        if name in existing:
            continue
        info = infos.get(name)
        if info is None or not info.type.tensor_type.elem_type:
            info = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        marked.graph.output.append(info)
    return marked


class RebuiltCandidate:
    """Runs an artifact rebuilt with marked outputs, one build per call, in a temporary folder
    removed with it (nothing is written into the artifact)."""

    def __init__(self, artifact: Any, target: Any = None):
        import onnx

        self.artifact = artifact
        self.target = target or get_target(artifact.target)
        self.source_path = source_graph(artifact)
        self.proto = onnx.load(str(self.source_path))  # weights in: each build writes its own copy
        self.spec = artifact.spec
        source = artifact.manifest.source
        self.ref = source.ref or str(self.source_path)
        self.input_specs = list(source.input_specs)
        self.builds = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="vlc-rebuild-")
        # the target must build and run here: say so once, before any bisection step
        status = self.target.available()
        if not status.ok or self.spec.device not in status.devices:
            why = status.reason if not status.ok else (
                f"it has no {self.spec.device} device here (devices: {', '.join(status.devices) or 'none'})")
            raise InputError(f"probing the {artifact.target} artifact {artifact.path} rebuilds it with marked outputs, "
                             f"and target '{artifact.target}' cannot build and run it here: {why}",
                             fix="run this on a machine where the target runs, or leave out --bisect to compare "
                                 "the graph it was built from in ONNX Runtime")

    def run_with_outputs(self, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        """Rebuild with `names` marked, run once on `feeds`, return their values."""
        import onnx

        self.builds += 1
        folder = Path(self._tmp.name) / f"build{self.builds}"
        folder.mkdir()
        try:
            marked = folder / "marked.onnx"
            proto = with_outputs(self.proto, names)
            large = proto.ByteSize() > (1 << 30)  # protobuf's 2 GiB limit: weights beside the graph
            onnx.save(proto, str(marked), save_as_external_data=large, all_tensors_to_one_file=True,
                      location="marked.weights" if large else None)
            source = CompileSource(marked, f"{self.ref} (+{len(names)} marked outputs)", self.input_specs)
            rebuilt = self.target.compile(source, self.spec, folder / "artifact", force=True)
            outputs = self.target.run(rebuilt, feeds)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        missing = [n for n in names if n not in outputs]
        if missing:
            raise InputError(f"the {self.artifact.target} build with marked outputs did not return "
                             f"{', '.join(missing[:3])}", where=str(self.artifact.path),
                             fix="the target's passes renamed or removed those tensors; bisect the ONNX graph "
                                 "it was built from instead (leave out --bisect)")
        return {n: np.asarray(outputs[n]) for n in names}

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> RebuiltCandidate:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
