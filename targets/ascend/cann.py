"""The data tables of the Ascend targets (data/*.toml), loaded once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from vlc.errors import InputError

DATA = Path(__file__).with_name("data")
CANN_VERSIONS = (6, 7, 8)
DEFAULT_CANN = 8


@cache
def load(name: str) -> dict[str, Any]:
    with open(DATA / f"{name}.toml", "rb") as f:
        return tomllib.load(f)


@dataclass(frozen=True)
class CannInfo:
    major: int
    label: str
    min_opset: int
    max_opset: int
    layernorm: dict[str, str]
    precision_mode_v2: bool

    def layernorm_form(self, precision: str) -> str:
        return self.layernorm.get(precision, self.layernorm.get("fp32", "decomposed"))


def parse_cann(value: Any) -> int:
    """-O cann=7, cann="8.0.RC1", cann=6.3 -> the major version."""
    text = str(value).strip()
    try:
        major = int(text.split(".")[0])
    except ValueError:
        major = -1
    if major not in CANN_VERSIONS:
        raise InputError(f"unknown CANN version '{value}'",
                         fix=f"use -O cann=N with N one of {', '.join(map(str, CANN_VERSIONS))} "
                             "(5.x graphs follow the 6 rules: -O cann=6)")
    return major


@cache
def cann_info(major: int) -> CannInfo:
    entry = load("cann")["cann"][str(parse_cann(major))]
    return CannInfo(int(major), entry["label"], int(entry["min_opset"]), int(entry["max_opset"]),
                    dict(entry["layernorm_form"]), bool(entry["precision_mode_v2"]))


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
