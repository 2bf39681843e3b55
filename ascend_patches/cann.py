"""CANN major versions and what each one's ATC takes from a graph (cann.toml beside this file):
the patches choose their rewrites by it, the Ascend target validates `-O cann=` with it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from vlc.errors import InputError

CANN_VERSIONS = (6, 7, 8)
DEFAULT_CANN = 8


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
    with open(Path(__file__).with_name("cann.toml"), "rb") as f:
        entry = tomllib.load(f)["cann"][str(parse_cann(major))]
    return CannInfo(int(major), entry["label"], int(entry["min_opset"]), int(entry["max_opset"]),
                    dict(entry["layernorm_form"]), bool(entry["precision_mode_v2"]))
