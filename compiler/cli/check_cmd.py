"""`vlc check --target T MODEL`: will the target's compiler take this graph, and what vlc fixes.

Targets that declare a pre-flight check (Capabilities.preflight) list every offending node with
the patch vlc applies automatically, apply those patches to a copy and check again. The exit status is
non-zero when something remains that no patch can fix.
"""

from __future__ import annotations

from typing import Any

import typer

from vlc.cli import console
from vlc.cli.options import (
    BatchOpt,
    CacheDirOpt,
    ModelArg,
    PrecisionOpt,
    PresetOpt,
    ShapesOpt,
    TargetOpt,
    TargetOptionsOpt,
    build_spec,
)
from vlc.plugin_manager import get_target
from vlc.preflight import CheckReport


def print_report(report: CheckReport) -> None:
    def rows(findings: list[Any]) -> list[list[Any]]:
        return [[f.severity, f.node or "", f.op_type or "", f.message,
                 f"patch {f.fix}" if f.fix else (f.hint or "—")] for f in findings]

    title = report.title
    if report.findings:
        console.table(title, ["severity", "node", "op", "problem", "fix"], rows(report.findings))
    else:
        console.out.print(f"{title}: no findings")
    console.out.print(f"patches vlc applies: {', '.join(report.patches) or 'none'}", highlight=False)
    if report.patch_error:
        console.out.print(f"[red]applying them failed:[/] {console.escape(str(report.patch_error))}",
                          markup=True, highlight=False)
    elif report.after is not None:
        left = [f for f in report.after if f.severity != "info"]
        if left:
            console.table("after vlc's patches", ["severity", "node", "op", "problem", "fix"], rows(left))
        else:
            console.out.print("after vlc's patches: no findings")
    for note in report.notes:
        console.info(note)
    if report.ok:
        console.out.print(f"[green]ok:[/] {console.escape(report.compiler)} should accept the patched graph "
                          f"(checked against vlc's tables, not a real {console.escape(report.compiler)})",
                          markup=True, highlight=False)
    else:
        console.out.print(f"[red]{len(report.remaining)} problem(s) no vlc patch fixes[/]", markup=True,
                          highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check(
        model: ModelArg,
        target: TargetOpt,
        precision: PrecisionOpt = "fp32",
        preset: PresetOpt = None,
        shapes: ShapesOpt = None,
        batch: BatchOpt = None,
        option: TargetOptionsOpt = None,
        no_patch: bool = typer.Option(False, "--no-patch", help="Only list findings; do not try vlc's patches."),
        cache_dir: CacheDirOpt = None,
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Check a model against a target's compiler before compiling; exit 1 if it cannot pass."""
        tgt = get_target(target)
        spec = build_spec(tgt, precision, preset, shapes, batch, option)
        from vlc.frontend.pipeline import prepare  # local: startup

        source = prepare(model, cache_dir=cache_dir)
        if not tgt.capabilities.preflight:
            tgt.validate_spec(spec, source.signature)
            message = (f"target {tgt.name} has no pre-flight table; the spec is valid and "
                       f"`vlc compile` reports what its compiler rejects")
            if json_out:
                console.emit_json({"target": tgt.name, "ok": True, "note": message})
            else:
                console.out.print(message)
            return
        report = tgt.preflight(source, spec, patch=not no_patch)
        if json_out:
            console.emit_json(report.to_json())
        else:
            print_report(report)
        if not report.ok:
            raise typer.Exit(code=1)
