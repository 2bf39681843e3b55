"""Driving ATC: find it, build its argument list from the spec, run it, read its verdict.

The argument list is a Python list handed to subprocess (never a shell string); every option
is written `--name=value` as ATC requires. A build succeeds only when atc exits 0 AND prints
its success line; the .om is then found as `<output>*.om` (some dynamic builds append
`_<os>_<arch>`). Known error codes become one actionable line; the full log stays beside the
artifact.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlc.errors import CompileError, InputError, TargetUnavailable
from vlc.signature import Signature
from vlc.targets.ascend.cann import atc_errors
from vlc.targets.ascend.options import AscendOptions
from vlc.targets.ascend.precision import auto_keep_dtype

START_LINE = "ATC start working now, please wait for a moment."
SUCCESS_LINE = "ATC run success, welcome to the next use."
FAILURE_LINE = "ATC run failed"
CODE_RE = re.compile(r"\b([EW][0-9A-Z]\d{4})\b")
DEFAULT_TOOLKIT = Path("/usr/local/Ascend/ascend-toolkit/latest")
ONNX_FRAMEWORK = "5"
FORBIDDEN_NAME_CHARS = set(":;,\"'")


@dataclass(frozen=True)
class Tool:
    """An executable and the environment it runs in."""

    path: Path
    env: dict[str, str] | None  # None: the current environment
    how: str  # where it was found, for messages


def _toolkit_home() -> Path | None:
    for var in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return DEFAULT_TOOLKIT if DEFAULT_TOOLKIT.exists() else None


def toolkit_env(set_env: Path, timeout: float = 60) -> dict[str, str]:
    """The environment `source set_env.sh` produces; the path goes in as "$1", never spliced."""
    result = subprocess.run(["bash", "-c", 'source "$1" >/dev/null 2>&1 && env -0', "vlc", str(set_env)],
                            capture_output=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise TargetUnavailable(f"sourcing {set_env} failed (exit {result.returncode})",
                                fix="check the Ascend toolkit installation")
    env = {}
    for item in result.stdout.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep and key:
            env[key] = value
    return env


def find_atc() -> tuple[Tool | None, str]:
    """(tool, '') or (None, why not): $VLC_ATC, then atc on PATH, then the toolkit's set_env.sh."""
    override = os.environ.get("VLC_ATC")
    if override:
        path = Path(override)
        if path.is_file() and os.access(path, os.X_OK):
            return Tool(path, None, "VLC_ATC"), ""
        return None, f"VLC_ATC={override} is not an executable file"
    on_path = shutil.which("atc")
    if on_path:
        return Tool(Path(on_path), None, "PATH"), ""
    home = _toolkit_home()
    if home is None:
        return None, ("atc not found: not on PATH, ASCEND_TOOLKIT_HOME unset and "
                      f"{DEFAULT_TOOLKIT} absent (install the CANN toolkit and "
                      "`source /usr/local/Ascend/ascend-toolkit/set_env.sh`)")
    candidate = home / "bin" / "atc"
    if not candidate.is_file():
        return None, f"atc not found under {home}/bin (is the CANN toolkit complete?)"
    for set_env in (home / "bin" / "setenv.bash", home.parent / "set_env.sh", home / "set_env.sh"):
        if set_env.is_file():
            try:
                return Tool(candidate, toolkit_env(set_env), f"{set_env}"), ""
            except (OSError, subprocess.SubprocessError, TargetUnavailable) as exc:
                return None, f"found {candidate} but sourcing {set_env} failed: {exc}"
    return None, f"found {candidate} but no set_env.sh next to the toolkit to set up its environment"


def toolkit_version() -> str:
    home = _toolkit_home()
    if home is None:
        return "unknown"
    for name in ("version.cfg", "version.info"):
        path = home / name
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if "version" in line.lower() and "=" in line:
                    return line.split("=", 1)[1].strip().strip('"')
    return "unknown"


# ---- the argument list -----------------------------------------------------------------------
def _check_name(name: str) -> str:
    if not name or FORBIDDEN_NAME_CHARS & set(name) or any(c.isspace() for c in name):
        raise InputError(f"input name '{name}' cannot be written in ATC's --input_shape syntax",
                         fix="rename the model input to letters, digits, '_', '.', '-' or '/'")
    return name


def input_shape_arg(signature: Signature, batch: int | None) -> str:
    """`a:1,3,224,224;b:1,77`; with batch None the batch axis is -1 (gears)."""
    parts = []
    for t in signature.inputs:
        dims = []
        for axis, d in enumerate(t.shape):
            if isinstance(d, int):
                dims.append(str(d))
            elif axis == 0:
                dims.append("-1" if batch is None else str(batch))
            else:
                raise InputError(f"input {t.name} axis {axis} ('{d}') has no size",
                                 fix=f"give it with --shapes {t.name}:<dims joined by x>")
        parts.append(f"{_check_name(t.name)}:{','.join(dims)}")
    return ";".join(parts)


@dataclass(frozen=True)
class AtcFiles:
    """Side files some options need, already written (paths relative to the run directory or absolute)."""

    keep_dtype: str | None = None
    mixlist: str | None = None


def write_side_files(opts: AscendOptions, directory: Path) -> AtcFiles:
    """keep_dtype.cfg (-O keep_dtype, plus the nodes islands=auto chose for the builds prepared in
    `directory`) and mixlist.json (-O fp32_ops)."""
    import json

    keep = mix = None
    kept = tuple(dict.fromkeys(opts.keep_dtype + auto_keep_dtype(opts, directory)))
    if kept:
        keep_path = directory / "keep_dtype.cfg"
        keep_path.write_text("\n".join(kept) + "\n")
        keep = str(keep_path)
    if opts.fp32_ops:
        mix_path = directory / "mixlist.json"
        mix_path.write_text(json.dumps({"black-list": {"to-add": list(opts.fp32_ops)}}, indent=2) + "\n")
        mix = str(mix_path)
    return AtcFiles(keep, mix)


def atc_args(model: str, output: str, opts: AscendOptions, signature: Signature,
             batch: int | None, files: AtcFiles = AtcFiles()) -> list[str]:
    """The atc arguments (without the executable) for one build."""
    args = [
        f"--framework={ONNX_FRAMEWORK}",
        f"--model={model}",
        f"--output={output}",
        f"--soc_version={opts.soc_version}",
        f"--input_format={opts.input_format}",
        f"--input_shape={input_shape_arg(signature, None if opts.gears else batch)}",
    ]
    if opts.gears:
        args.append(f"--dynamic_batch_size={','.join(map(str, opts.gears))}")
    flag, value = opts.precision_flag
    args.append(f"{flag}={value}")
    if files.keep_dtype:
        args.append(f"--keep_dtype={files.keep_dtype}")
    if files.mixlist:
        args.append(f"--modify_mixlist={files.mixlist}")
    if opts.implmode:
        args.append(f"--op_select_implmode={opts.implmode}")
        if opts.implmode_ops:
            args.append(f"--optypelist_for_implmode={','.join(opts.implmode_ops)}")
    if signature.outputs and all(t.dtype == "float32" for t in signature.outputs):
        args.append("--output_type=FP32")  # else ATC hands fp16 outputs back from fp16 builds
    args.append(f"--log={opts.log}")
    return args


# ---- running and reading ------------------------------------------------------------------
@dataclass
class AtcResult:
    returncode: int | None
    output: str  # stdout and stderr as ATC printed them
    om_files: list[Path] = field(default_factory=list)
    timed_out: bool = False

    @property
    def success(self) -> bool:
        return self.returncode == 0 and SUCCESS_LINE in self.output and not self.timed_out

    @property
    def codes(self) -> list[str]:
        seen: list[str] = []
        for code in CODE_RE.findall(self.output):
            if code not in seen:
                seen.append(code)
        return seen


def explain(code: str) -> dict[str, Any] | None:
    table = atc_errors()
    if code in table:
        return table[code]
    for key in sorted(table, key=len, reverse=True):
        if table[key].get("prefix") and code.startswith(key):
            return table[key]
    return None


def failure_message(result: AtcResult, log_path: Path | None) -> CompileError:
    where = str(log_path) if log_path else None
    if result.timed_out:
        return CompileError("atc did not finish in time", where=where,
                            fix="raise -O timeout=SECONDS, or check the machine's load")
    errors = [c for c in result.codes if c.startswith("E")]
    lines = result.output.splitlines()
    if errors:
        code = errors[0]
        known = explain(code)
        detail = next((ln.strip() for ln in lines if code in ln), "")
        what = f"atc failed with {code}" + (f": {known['what']}" if known else "")
        if detail and detail not in what:
            what += f" — ATC said: {detail[:300]}"
        if len(errors) > 1:
            what += f" (also {', '.join(errors[1:5])})"
        return CompileError(what, where=where,
                            fix=known["fix"] if known else "read the build log; rerun with -O log=info")
    if result.returncode == 0:
        return CompileError("atc exited 0 without its success line", where=where,
                            fix="read the build log; the toolkit may be incomplete")
    tail = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
    return CompileError(f"atc failed (exit {result.returncode}): {tail[:300]}", where=where,
                        fix="read the build log; rerun with -O log=info")


def run_atc(tool: Tool, args: list[str], output_stem: Path, timeout: float,
            workdir: Path | None = None) -> AtcResult:
    """Run atc in a temporary working directory (it writes kernel_meta/ and fusion_result.json)."""
    with tempfile.TemporaryDirectory(prefix="vlc-atc-") as tmp:
        cwd = workdir or Path(tmp)
        try:
            proc = subprocess.run([str(tool.path), *args], cwd=cwd, env=tool.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            text = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return AtcResult(None, text, timed_out=True)
        except OSError as exc:
            raise TargetUnavailable(f"cannot start {tool.path}: {exc}",
                                    fix="check the toolkit installation and permissions") from None
        result = AtcResult(proc.returncode, proc.stdout.decode(errors="replace"))
        fusion = cwd / "fusion_result.json"
        if fusion.is_file():
            result.output += f"\n[vlc] fusion_result.json:\n{fusion.read_text(errors='replace')[:20000]}"
    result.om_files = sorted(output_stem.parent.glob(output_stem.name + "*.om"))
    return result
