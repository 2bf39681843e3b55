"""Lint, types and the import layering, as tests, so CI (`./dev test`) enforces them.

ruff, mypy and import-linter run from this interpreter's environment with the configuration in
pyproject.toml. mypy and import-linter read the vlc package through its import names: the folders
map onto vlc.* (compiler -> vlc, targets -> vlc.targets, ...), which neither tool derives from
setuptools' package-dir, so both run over a tree of links named as the package is imported.

    .venv/bin/python -m pytest tests/test_code_quality.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Product code, the tests and the measurement scripts are all held to the same rules
LINTED = ("compiler", "targets", "plugins", "ascend_patches", "examples", "tests", "benchmarks")


def package_dirs() -> dict[str, Path]:
    """pyproject's package-dir: import name -> source folder."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def import_tree(where: Path) -> Path:
    """A folder holding `vlc/` as it is imported: links to each source file and subpackage, with
    the folders package-dir maps below vlc (vlc.targets, ...) linked in at their import names."""
    dirs = package_dirs()
    top = where / "vlc"
    top.mkdir()
    mapped = {name.split(".", 1)[1]: path for name, path in dirs.items() if name.startswith("vlc.")}
    for entry in dirs["vlc"].iterdir():
        if entry.name != "__pycache__" and entry.name not in mapped:
            (top / entry.name).symlink_to(entry)
    for name, path in mapped.items():
        (top / name).symlink_to(path)
    return where


def run_tool(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    tool = BIN / argv[0]
    if not tool.exists():
        pytest.fail(f"{argv[0]} is not installed in {BIN}: ./dev test installs the test extra (pyproject.toml)")
    return subprocess.run([str(tool), *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, check=False)


def source_paths(text: str, tree: Path) -> str:
    """A tool's output with the linked tree's vlc/... paths written as the repository's files."""
    mapped = sorted(((f"vlc/{n[4:].replace('.', '/')}/" if n != "vlc" else "vlc/", p)
                     for n, p in package_dirs().items()), key=lambda item: -len(item[0]))
    lines = []
    for line in text.replace(f"{tree}/", "").splitlines():
        for prefix, path in mapped:
            if line.startswith(prefix):
                line = f"{path.relative_to(ROOT)}/{line[len(prefix):]}"
                break
        lines.append(line)
    return "\n".join(lines)


def test_ruff_finds_nothing() -> None:
    done = run_tool(["ruff", "check", "--no-cache", "--output-format", "concise", *LINTED], ROOT)
    assert done.returncode == 0, \
        f"ruff check (fix with `ruff check --fix`, or see the rule):\n{done.stdout}{done.stderr}"


def test_mypy_finds_nothing(tmp_path: Path) -> None:
    tree = import_tree(tmp_path)
    done = run_tool(["mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", os.devnull,
                     "--no-error-summary", "--hide-error-context", "-p", "vlc"], tree)
    found = "\n".join(line for line in done.stdout.splitlines() if ": note: " not in line)
    assert done.returncode == 0, f"mypy:\n{source_paths(found, tree)}{done.stderr}"


def test_imports_keep_the_layering(tmp_path: Path) -> None:
    """The contracts in pyproject.toml's [tool.importlinter]; the README's "How it is built"
    describes the same rooms."""
    tree = import_tree(tmp_path)
    done = run_tool(["lint-imports", "--no-cache", str(ROOT / "pyproject.toml")], tree, env={"PYTHONPATH": str(tree)})
    assert done.returncode == 0, f"lint-imports:\n{source_paths(done.stdout, tree)}{done.stderr}"


def test_import_tree_covers_every_module(tmp_path: Path) -> None:
    """The linked tree the type and import checks read holds every module of the package."""
    top = import_tree(tmp_path) / "vlc"
    found = {(Path(folder) / f).relative_to(top).with_suffix("")
             for folder, _, files in os.walk(top, followlinks=True) for f in files if f.endswith(".py")}
    expected = set()
    for name, folder in package_dirs().items():
        below = Path(*name.split(".")[1:])
        expected |= {below / p.relative_to(folder).with_suffix("") for p in folder.rglob("*.py")}
    assert found == expected
