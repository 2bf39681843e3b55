"""PyTorch -> ONNX with the dynamo exporter (default) or the TorchScript exporter."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import ExportError, InputError
from vlc.model import BATCH, ModelSource

# auto: dynamo, and TorchScript when dynamo fails (say on a data-dependent branch); the parity
# check then judges the traced graph on other inputs.
EXPORTERS = ("auto", "dynamo", "torchscript")
TRACE_BATCH = 2  # batch 1 would let the tracer specialise the dynamic axis
DEFAULT_TORCHSCRIPT_OPSET = 17

_log = logging.getLogger("vlc")
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


@dataclass
class Exported:
    model: Any  # onnx_ir Model
    exporter: str  # the exporter that produced it
    fallback: str = ""  # why the first exporter failed, when "auto" fell back


def export_model(source: ModelSource, path: str | Path | None = None, *, exporter: str = "auto",
                 opset: int | None = None, log_path: Path | None = None) -> Exported:
    """Export to an onnx_ir Model (also saved to `path` when given). Batch is the dynamic axis.

    What the exporters print (graph dumps, guard logs: kilobytes) goes to `log_path`, not the
    terminal; an error names the file."""
    if exporter not in EXPORTERS:
        raise InputError(f"unknown exporter '{exporter}'", fix=f"use one of: {', '.join(EXPORTERS)}")
    if exporter != "auto":
        exported = Exported(_export_with(source, exporter, opset, log_path), exporter)
    else:
        try:
            exported = Exported(_export_with(source, "dynamo", opset, log_path), "dynamo")
        except ExportError as first:
            try:
                exported = Exported(_export_with(source, "torchscript", opset, log_path, append=True),
                                    "torchscript", fallback=first.line())
            except ExportError as second:
                raise ExportError(f"{first.what}; the TorchScript exporter failed too: {second.what}",
                                  where=first.where, fix=first.fix) from None
            _log.warning("the dynamo exporter failed at %s (%s); exported with the TorchScript exporter "
                         "instead, checked by the parity check (--exporter dynamo to stop at the failure)",
                         first.where, first.what)
    if path is not None:
        save_model(exported.model, Path(path))
    return exported


def _export_with(source: ModelSource, exporter: str, opset: int | None, log_path: Path | None, *,
                 append: bool = False) -> Any:
    import torch

    module = source.module.eval()
    args = example_tensors(source)
    input_names = [s.name for s in source.inputs]
    opset = opset or source.opset
    try:
        with torch.no_grad(), quiet_exporter(log_path, append=append):
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=65536)
                dynamic = tuple({0: batch} if s.shape and s.shape[0] == BATCH else None
                                for s in source.inputs)
                program = torch.onnx.export(
                    module, args, dynamo=True, input_names=input_names,
                    output_names=source.output_names, opset_version=opset,
                    dynamic_shapes=dynamic if any(dynamic) else None, verbose=False)
                return program.model
            return _export_torchscript(module, args, source, opset or DEFAULT_TORCHSCRIPT_OPSET)
    except (InputError, ExportError):
        raise
    except Exception as exc:
        raise export_error(source, exc, exporter, log_path) from exc


@contextlib.contextmanager
def quiet_exporter(log_path: Path | None = None, *, append: bool = False) -> Iterator[None]:
    """The exporters' prints, logs and warnings go to `log_path` (else nowhere): registration
    notes, graph dumps and guard traces are not the user's terminal's concern."""
    # closed in the finally below: the stream outlives this statement
    stream: Any = open(log_path, "a" if append else "w", encoding="utf-8") if log_path else io.StringIO()  # noqa: SIM115
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    swapped = [(lg, lg.handlers[:], lg.level) for lg in _torch_loggers()]
    onnx_logger = logging.getLogger("torch.onnx")
    onnx_level = onnx_logger.level
    try:
        for lg, _, _ in swapped:
            lg.handlers = [handler]
        onnx_logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, handlers, level in swapped:
            lg.handlers = handlers
            lg.setLevel(level)
        onnx_logger.setLevel(onnx_level)
        stream.close()


def _torch_loggers() -> list[logging.Logger]:
    """torch's loggers that print themselves (torch._logging gives them their own handlers)."""
    found = [logging.getLogger("torch")]
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if name.startswith("torch.") and isinstance(lg, logging.Logger) and lg.handlers:
            found.append(lg)
    return found


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


def export_error(source: ModelSource, exc: BaseException, exporter: str = "dynamo",
                 log_path: Path | None = None) -> ExportError:
    """Name the module and, when the exporter says, the operator and the user's source line."""
    chain: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(_ANSI.sub("", str(cause)))
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(chain)
    operator = next((m.group(1) for pattern in _OPERATOR_PATTERNS for m in [pattern.search(text)] if m),
                    None)
    summary = text.split("## Exception summary", 1)[-1].strip().splitlines()
    first = next((line for line in summary if line.strip()), type(exc).__name__).strip()
    first = re.sub(r"<class '[\w.]+'>: ", "", first)[:240]  # the exception's class path is noise
    frames = [m for m in _USER_FRAME.finditer("".join(traceback.format_exception(exc)))
              if "site-packages" not in m.group(1) and "/torch/" not in m.group(1)
              and not Path(m.group(1)).resolve().is_relative_to(_VLC_DIR)]
    where = (f"{frames[-1].group(1)}:{frames[-1].group(2)} in {frames[-1].group(3)}" if frames
             else source.ref)
    what = f"exporting {source.name} ({type(source.module).__name__}) with {exporter} failed"
    if operator:
        what += f" at operator {operator}"
    if log_path is not None:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write("\n" + "".join(traceback.format_exception(exc)))
    log_note = f" (the exporter's output: {log_path})" if log_path is not None else ""
    if "data-dependent" in text or "GuardOnDataDependent" in text:
        fix = ("make that line independent of tensor values (torch.cond for a branch, fixed-size "
               "indexing instead of sampling or masking by value), or export with --exporter torchscript, "
               "which traces one branch")
    else:
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        fix = ("rewrite that operator in the model source, register a custom ONNX translation for it, "
               f"or try --exporter {other}")
    return ExportError(f"{what}: {first}{log_note}", where=where, fix=fix)


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
