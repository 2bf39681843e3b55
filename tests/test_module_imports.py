"""vlc's own modules import each other at module level.

Only vendor SDKs and heavy frameworks (torch, onnx, tensorrt, acl, ray, ...) are imported inside
the functions that use them, so that `vlc --help` and `vlc targets` start fast
(tests/cli/test_startup.py). A function-local import of a vlc module is allowed only where the
module level cannot take it, and says why on its line:

    from vlc.frontend.precision import convert  # local: loads onnx
    from vlc.ascend_patches import attention  # local: each patch module imports this one

    .venv/bin/python -m pytest tests/test_module_imports.py -q
"""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
MARK = "# local:"


def package_folders(root: Path = ROOT) -> list[Path]:
    """The source folders of pyproject's package-dir (compiler -> vlc, targets -> vlc.targets, ...)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return sorted({root / folder for name, folder in config.items() if name.split(".")[0] == "vlc"})


def vlc_module(node: ast.Import | ast.ImportFrom) -> str | None:
    """The vlc module an import statement names (None for any other package)."""
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: inside the vlc package
            return "." * node.level + (node.module or "")
        names = [node.module or ""]
    else:
        names = [alias.name for alias in node.names]
    return next((name for name in names if name == "vlc" or name.startswith("vlc.")), None)


def local_imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import of a vlc module inside a function body (at any depth), with that module."""
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                module = vlc_module(child)
                if module is not None:
                    found.append((child, module))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def offenders(root: Path = ROOT) -> list[str]:
    """file:line for each function-local vlc import without a `# local: why` comment on its lines."""
    found = []
    for folder in package_folders(root):
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root).as_posix()
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            for node, _module in local_imports(ast.parse(text, filename=rel)):
                span = lines[node.lineno - 1:node.end_lineno or node.lineno]
                reasons = [line.split(MARK, 1)[1].split("#", 1)[0].strip() for line in span if MARK in line]
                if any(reasons):
                    continue
                found.append(f"{rel}:{node.lineno}: {span[0].strip()}")
    return found


def test_vlc_modules_import_each_other_at_module_level() -> None:
    found = offenders()
    assert not found, (
        f"{len(found)} function-local import(s) of vlc modules: move each to module level, or, where that "
        "would make an import cycle or load a heavy framework when `vlc --help`/`vlc targets` start, "
        "say so on its line (`# local: loads onnx`, `# local: cycle with vlc.x`):\n" + "\n".join(found))


def test_finds_a_bare_local_import(tmp_path: Path) -> None:
    """The check itself: a local import without the comment is reported, with it is not."""
    (tmp_path / "pyproject.toml").write_text('[tool.setuptools.package-dir]\nvlc = "src"\n')
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text(
        "from vlc.errors import InputError\n\n\n"
        "def f():\n    from vlc.spec import Precision\n    from . import spec\n"
        "    from vlc.frontend.precision import (  # local: loads onnx\n        convert,\n    )\n"
        "    import numpy\n    return Precision, spec, convert, numpy, InputError\n")
    assert offenders(tmp_path) == ["src/m.py:5: from vlc.spec import Precision", "src/m.py:6: from . import spec"]
