"""PyTorch -> ONNX with the dynamo exporter (default) or the TorchScript exporter."""

from __future__ import annotations

import contextlib
import logging
import re
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vlc.errors import ExportError, InputError
from vlc.model import BATCH, ModelSource

EXPORTERS = ("dynamo", "torchscript")
TRACE_BATCH = 2  # batch 1 would let the tracer specialise the dynamic axis
DEFAULT_TORCHSCRIPT_OPSET = 17

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OPERATOR_PATTERNS = (
    re.compile(r"op='([\w.]+)'"),
    re.compile(r"target=torch\.ops\.([\w.]+)"),
    re.compile(r"\b(aten::\w+)"),
    re.compile(r"\b(aten\.\w+(?:\.\w+)?)"),
)
_VLC_DIR = Path(__file__).resolve().parents[1]
_USER_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)')


def example_tensors(source: ModelSource, batch: int = TRACE_BATCH) -> tuple[Any, ...]:
    import torch

    feeds = source.generate_inputs(batch, seed=0)
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[spec.name])) for spec in source.inputs)


def export_model(source: ModelSource, path: str | Path | None = None, *, exporter: str = "dynamo",
                 opset: int | None = None) -> Any:
    """Export to an onnx_ir Model (also saved to `path` when given). Batch is the dynamic axis."""
    import torch

    if exporter not in EXPORTERS:
        raise InputError(f"unknown exporter '{exporter}'", fix=f"use one of: {', '.join(EXPORTERS)}")
    module = source.module.eval()
    args = example_tensors(source)
    input_names = [s.name for s in source.inputs]
    opset = opset or source.opset
    try:
        with torch.no_grad(), quiet_exporter():
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=65536)
                dynamic = tuple({0: batch} if s.shape and s.shape[0] == BATCH else None
                                for s in source.inputs)
                program = torch.onnx.export(
                    module, args, dynamo=True, input_names=input_names,
                    output_names=source.output_names, opset_version=opset,
                    dynamic_shapes=dynamic if any(dynamic) else None, verbose=False)
                model = program.model
            else:
                model = _export_torchscript(module, args, source, opset or DEFAULT_TORCHSCRIPT_OPSET)
    except (InputError, ExportError):
        raise
    except Exception as exc:
        raise export_error(source, exc) from exc
    if path is not None:
        save_model(model, Path(path))
    return model


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporters log registration notes and deprecation warnings that are not the user's concern."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export_torchscript(module: Any, args: tuple[Any, ...], source: ModelSource, opset: int) -> Any:
    import tempfile

    import onnx_ir as ir
    import torch

    dynamic_axes = {s.name: {0: BATCH} for s in source.inputs if s.shape and s.shape[0] == BATCH}
    dynamic_axes.update({name: {0: BATCH} for name in source.output_names} if dynamic_axes else {})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        torch.onnx.export(module, args, str(out), dynamo=False, input_names=[s.name for s in source.inputs],
                          output_names=source.output_names, opset_version=opset,
                          dynamic_axes=dynamic_axes or None, do_constant_folding=True)
        return ir.load(str(out))


def export_error(source: ModelSource, exc: BaseException) -> ExportError:
    """Name the module and, when the exporter says, the operator and the user's source line."""
    chain = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(_ANSI.sub("", str(cause)))
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(chain)
    operator = next((m.group(1) for pattern in _OPERATOR_PATTERNS for m in [pattern.search(text)] if m),
                    None)
    summary = text.split("## Exception summary", 1)[-1].strip().splitlines()
    first = next((line for line in summary if line.strip()), type(exc).__name__).strip()[:240]
    frames = [m for m in _USER_FRAME.finditer("".join(traceback.format_exception(exc)))
              if "site-packages" not in m.group(1) and "/torch/" not in m.group(1)
              and not Path(m.group(1)).resolve().is_relative_to(_VLC_DIR)]
    where = (f"{frames[-1].group(1)}:{frames[-1].group(2)} in {frames[-1].group(3)}" if frames
             else source.ref)
    what = f"exporting {source.name} ({type(source.module).__name__}) failed"
    if operator:
        what += f" at operator {operator}"
    return ExportError(f"{what}: {first}", where=where,
                       fix="rewrite that operator in the model source, register a custom ONNX "
                           "translation for it, or try --exporter torchscript")


TWO_GB = 2 * 1024**3


def model_bytes(model: Any) -> int:
    return sum(int(v.const_value.nbytes) for v in model.graph.initializers.values()
               if v.const_value is not None)


def save_model(model: Any, path: Path) -> Path:
    """Save an onnx_ir Model self-contained: weights inline, or in `<name>.onnx.data` past 2 GB.

    A model loaded from a file with external data still points at that file's data (any relative
    location); saving it elsewhere as it is would leave those references dangling, so the data
    is always written anew next to `path`.
    """
    import onnx_ir as ir

    path.parent.mkdir(parents=True, exist_ok=True)
    _load_external_attributes(model)  # external_data= below moves initializers only
    if model_bytes(model) >= TWO_GB:
        ir.save(model, path, external_data=path.name + ".data")
    else:
        ir.external_data.load_to_model(model)
        ir.save(model, path)
    return path


def _load_external_attributes(model: Any) -> None:
    """Tensor attributes (Constant nodes) with external data, read into memory: load_to_model skips them."""
    import onnx_ir as ir

    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for name, attr in list(node.attributes.items()):
            if attr.type == ir.AttributeType.TENSOR and isinstance(attr.value, ir.ExternalTensor):
                node.attributes[name] = ir.AttrTensor(name, ir.Tensor(attr.value.numpy(), name=attr.value.name))
