"""The root `vlc` application: global options, command registration, one-line errors."""

from __future__ import annotations

import importlib
import sys
import traceback

import typer
from typer.exceptions import Abort, TyperException

import vlc
from vlc.cli.console import err, escape, set_verbosity, state
from vlc.errors import InputError, VlcError
from vlc.plugin_manager import get_plugin_manager

app = typer.Typer(
    name="vlc",
    help="Compile vision and vision-language models for TensorRT, Ascend, ONNX Runtime and PyTorch; "
         "run, profile, compare and report.",
    pretty_exceptions_enable=False,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    add_completion=True,
    # -h everywhere: click passes the root context's settings down to every subcommand
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Built-in command modules; each defines `register(app)`. Third-party commands come through
# the register_commands hook.
COMMAND_MODULES = (
    "vlc.cli.export_cmd",
    "vlc.cli.compile_cmd",
    "vlc.cli.run_cmd",
    "vlc.cli.profile_cmd",
    "vlc.cli.compare_cmd",
    "vlc.cli.targets_cmd",
    "vlc.cli.check_cmd",
    "vlc.cli.bench_cmd",
    "vlc.cli.report_cmd",
    "vlc.cli.plugins_cmd",
    "vlc.cli.debug_cmd",
    "vlc.cli.campaign_cmd",
    "vlc.cli.worker_cmd",
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, show_default=False,
                                help="Print what vlc does on stderr: -v steps and choices, -vv details too."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="Print only results and errors: no progress, notes or warnings."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    state.debug = debug
    if verbose and quiet:
        raise InputError("-v/--verbose and -q/--quiet contradict each other", fix="give one of them")
    set_verbosity(-1 if quiet else verbose)
    if version:
        typer.echo(f"vlc {vlc.__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


_built = False


def build_app() -> typer.Typer:
    """Register every command once (main() may run many times in one process, as in tests)."""
    global _built
    if _built:
        return app
    _built = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)

    get_plugin_manager().hook.register_commands(app=app)
    return app


def usage_line(exc: TyperException) -> str:
    """A click usage error as one line: what, in which command, where to look."""
    text = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "vlc"
    return f"{text} ({command}) — see `{command} --help`"


INTERRUPTED = 130  # the shell's status for SIGINT


def _interrupted() -> None:
    err.print("interrupted", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns (and exits with) the process status."""
    args = sys.argv[1:] if argv is None else argv
    state.debug = "--debug" in args
    set_verbosity(0)  # main() may run many times in one process; the root options set it again
    try:
        build_app()
        # not standalone: usage errors come back as exceptions and are printed as one line below
        # (typer would draw a multi-line box); --help and typer.Exit return their status
        result = app(args=args, prog_name="vlc", standalone_mode=False)
        code = result if isinstance(result, int) and not isinstance(result, bool) else 0
        if code == INTERRUPTED:  # typer turns Ctrl-C inside a command into exit 130
            _interrupted()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:  # Ctrl-C while the commands and plugins load
        if state.debug:
            traceback.print_exc()
        _interrupted()
        code = INTERRUPTED
    except TyperException as exc:  # a bad option value, an unknown option, a missing argument
        err.print(f"[bold red]error:[/] {escape(usage_line(exc))}", markup=True, highlight=False)
        code = exc.exit_code
    except Abort:  # end of input at a prompt
        err.print("aborted", highlight=False)
        code = 1
    except VlcError as exc:
        if state.debug:
            traceback.print_exc()
        err.print(f"[bold red]error:[/] {escape(exc.line())}", markup=True, highlight=False)
        code = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a bug or an unexpected library failure: still one line
        if state.debug:
            traceback.print_exc()
        err.print(f"[bold red]error:[/] {escape(f'{type(exc).__name__}: {exc}')} — rerun with --debug "
                  "for the traceback and report it if it looks like a vlc bug", markup=True, highlight=False)
        code = 1
    if argv is None:
        sys.exit(code)
    return code
