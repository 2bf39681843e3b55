"""Arguments and options shared by several commands, declared once, and the spec they build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vlc.spec import Precision, TargetSpec, parse_batch_range, parse_options, parse_shape_ranges

ModelArg = Annotated[str, typer.Argument(
    help="Example name (name@test for the small size), file.py:factory, package.module:factory, "
         "or an .onnx file.")]
TargetOpt = Annotated[str, typer.Option("--target", "-t", help="Target name (see `vlc targets`).")]
PrecisionOpt = Annotated[str, typer.Option("--precision", "-p", help="fp32, tf32, fp16, bf16 or int8.")]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="Named hardware preset of the target.")]
ShapesOpt = Annotated[list[str] | None, typer.Option(
    "--shapes", help="name:MIN,OPT,MAX shape range of one input "
                     "(e.g. image:1x3x224x224,8x3x224x224,32x3x224x224); repeatable.")]
BatchOpt = Annotated[str | None, typer.Option("--batch", help="Batch range N or MIN,OPT,MAX.")]
TargetOptionsOpt = Annotated[list[str] | None, typer.Option(
    "-O", "--option", help="Target option key=value; repeatable (see `vlc targets --json`).")]
CacheDirOpt = Annotated[Path | None, typer.Option(
    help="Front-end cache directory (default: $VLC_CACHE, else $XDG_CACHE_HOME/vlc or ~/.cache/vlc).")]
ExporterOpt = Annotated[str, typer.Option(
    help="Front end: auto (default: dynamo, then TorchScript when dynamo fails), dynamo or torchscript.")]
OpsetOpt = Annotated[int | None, typer.Option(help="Front end: ONNX opset (exporter default when unset).")]
PassesOpt = Annotated[str | None, typer.Option(
    help="Front end: comma-separated pass names; '' for none. "
         "Default: rewrite-default,fuse-layernorm,remove-unused.")]
NoSimplifyOpt = Annotated[bool, typer.Option("--no-simplify", help="Front end: skip onnxsim / the optimizer.")]
NoParityOpt = Annotated[bool, typer.Option("--no-parity", help="Front end: skip the PyTorch parity check.")]
WeightsOpt = Annotated[str | None, typer.Option(help="Real weights for an example model.")]


def build_spec(target: Any, precision: str, preset: str | None, shapes: list[str] | None,
               batch: str | None, options: list[str] | None, device: str | None = None) -> Any:
    """The TargetSpec the user typed; the device defaults to the target's first (cuda for trt)."""

    return TargetSpec(target=target.name, precision=Precision.parse(precision), preset=preset,
                      device=device or target.devices[0], shapes=parse_shape_ranges(shapes or []),
                      batch=parse_batch_range(batch) if batch is not None else None,
                      options=parse_options(options or []))
