"""`vlc check --target T MODEL`: will the target's compiler take this graph, and what vlc fixes.

Targets with a pre-flight table (the Ascend targets) list every offending node with the patch
vlc applies automatically, apply those patches to a copy and check again. The exit status is
non-zero when something remains that no patch can fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from vlc.cli import console
from vlc.errors import InputError


def load_source(model: str, cache_dir: Optional[Path] = None) -> Any:
    """A CompileSource for a model reference: the front end's prepare(), or a bare .onnx file."""
    from vlc.target import CompileSource

    try:
        from vlc.frontend.pipeline import prepare
    except ImportError:
        prepare = None
    if prepare is not None:
        return prepare(model) if cache_dir is None else prepare(model, cache_dir)
    path = Path(model)
    if path.suffix.lower() != ".onnx":
        raise InputError(f"cannot load '{model}' without the front end", fix="pass an .onnx file")
    if not path.is_file():
        raise InputError(f"model file {path} does not exist", fix="check the path")
    from vlc.model import specs_from_signature
    from vlc.signature import onnx_signature

    return CompileSource(onnx_path=path, ref=model, input_specs=specs_from_signature(onnx_signature(path).inputs))


def build_spec(target: Any, precision: str, preset: Optional[str], shapes: list[str],
               batch: Optional[str], option: list[str]) -> Any:
    from vlc.spec import Precision, TargetSpec, parse_batch_range, parse_options, parse_shape_ranges

    return TargetSpec(target=target.name, precision=Precision.parse(precision), preset=preset,
                      shapes=parse_shape_ranges(shapes),
                      batch=parse_batch_range(batch) if batch else None,
                      options=parse_options(option))


def print_report(report: Any) -> None:
    def rows(findings: list[Any]) -> list[list[Any]]:
        return [[f.severity, f.node or "", f.op_type or "", f.message,
                 f"patch {f.fix}" if f.fix else (f.hint or "—")] for f in findings]

    title = f"pre-flight: {report.target} {report.soc_version}, CANN {report.cann}"
    if report.findings:
        console.table(title, ["severity", "node", "op", "problem", "fix"], rows(report.findings))
    else:
        console.out.print(f"{title}: no findings")
    console.out.print(f"patches vlc applies: {', '.join(report.patches) or 'none'}", highlight=False)
    if report.patch_error:
        console.out.print(f"[red]applying them failed:[/] {report.patch_error}", highlight=False)
    elif report.after is not None:
        left = [f for f in report.after if f.severity != "info"]
        if left:
            console.table("after vlc's patches", ["severity", "node", "op", "problem", "fix"], rows(left))
        else:
            console.out.print("after vlc's patches: no findings")
    for note in report.notes:
        console.info(note)
    if report.ok:
        console.out.print("[green]ok:[/] ATC should accept the patched graph (checked against vlc's "
                          "tables, not a real ATC)", highlight=False)
    else:
        console.out.print(f"[red]{len(report.remaining)} problem(s) no vlc patch fixes[/]", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check(
        model: str = typer.Argument(..., help="Example name (name@test), file.py:factory, "
                                    "package.module:factory, or an .onnx file."),
        target: str = typer.Option(..., "--target", "-t", help="Target name (see `vlc targets`)."),
        precision: str = typer.Option("fp32", "--precision", "-p", help="Precision of the build to check for."),
        preset: Optional[str] = typer.Option(None, "--preset", help="Named hardware preset of the target."),
        shapes: list[str] = typer.Option([], "--shapes", help="name:MIN,OPT,MAX shape of one input; repeatable."),
        batch: Optional[str] = typer.Option(None, "--batch", help="Batch range N or MIN,OPT,MAX."),
        option: list[str] = typer.Option([], "-O", "--option", help="Target option key=value; repeatable."),
        no_patch: bool = typer.Option(False, "--no-patch", help="Only list findings; do not try vlc's patches."),
        cache_dir: Optional[Path] = typer.Option(None, help="Front-end cache directory."),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Check a model against a target's compiler before compiling; exit 1 if it cannot pass."""
        from vlc.plugin_manager import get_target

        tgt = get_target(target)
        spec = build_spec(tgt, precision, preset, shapes, batch, option)
        source = load_source(model, cache_dir)
        preflight = getattr(tgt, "preflight", None)
        if preflight is None:
            tgt.validate_spec(spec, source.signature)
            message = (f"target {tgt.name} has no pre-flight table; the spec is valid and "
                       f"`vlc compile` reports what its compiler rejects")
            if json_out:
                console.emit_json({"target": tgt.name, "ok": True, "note": message})
            else:
                console.out.print(message)
            return
        report = preflight(source, spec, patch=not no_patch)
        if json_out:
            console.emit_json(report.to_json())
        else:
            print_report(report)
        if not report.ok:
            raise typer.Exit(code=1)
