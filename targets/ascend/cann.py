"""The data tables of the Ascend targets (data/*.toml), loaded once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from vlc.ascend_patches.cann import CANN_VERSIONS, DEFAULT_CANN, CannInfo, cann_info, parse_cann

DATA = Path(__file__).with_name("data")
__all__ = ["CANN_VERSIONS", "DEFAULT_CANN", "CannInfo", "cann_info", "parse_cann"]  # the patch room's, re-exported


def load(name: str) -> dict[str, Any]:
    with open(DATA / f"{name}.toml", "rb") as f:
        return tomllib.load(f)


def gear_limits() -> tuple[int, int]:
    gears = load("cann")["gears"]
    return int(gears["min"]), int(gears["max"])


def input_dtypes() -> tuple[set[str], dict[str, str]]:
    table = load("cann")["inputs"]
    return set(table["supported"]), dict(table.get("warn", {}))


@dataclass(frozen=True)
class OpSupport:
    parsed_from: dict[str, int]  # op -> first CANN major that parses it
    missing: dict[str, dict[str, Any]]
    constraints: dict[str, list[str]]
    einsum_equations: frozenset[str]

    def parsed(self, op: str, cann: int) -> bool | None:
        """True/False when the table knows, None for operators it does not list."""
        if op in self.missing:
            return False
        if op in self.parsed_from:
            return cann >= self.parsed_from[op]
        return None


@cache
def op_support() -> OpSupport:
    table = load("ops")
    parsed_from = {op: min(CANN_VERSIONS) for op in table["parsed"]["all"]}
    for key, ops in table["parsed"].items():
        if key.startswith("since_"):
            for op in ops:
                parsed_from[op] = int(key.removeprefix("since_"))
    return OpSupport(parsed_from, dict(table["missing"]),
                     {k: list(v) for k, v in table["constraints"].items()},
                     frozenset(e.replace(" ", "") for e in table["einsum"]["equations"]))


@dataclass(frozen=True)
class SocPreset:
    name: str
    soc_version: str
    chip: str
    fp32_precision_mode: str
    shape_ranges: bool


@cache
def soc_table(target: str) -> dict[str, Any]:
    return load("socs")[target]


def soc_presets(target: str) -> dict[str, SocPreset]:
    return {name: SocPreset(name, p["soc_version"], p["chip"], p["fp32_precision_mode"],
                            bool(p["shape_ranges"]))
            for name, p in soc_table(target)["presets"].items()}


@cache
def atc_errors() -> dict[str, dict[str, Any]]:
    return load("atc_errors")
