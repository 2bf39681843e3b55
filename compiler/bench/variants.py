"""`--targets` entries with target options: `torch`, `torch:mode=compile`, `onnxruntime:a=1:b=2`.

An entry names one target plus options for its TargetSpec (vlc.spec.parse_options semantics:
values read as JSON when they look like it). Its label, the entry as written, is what the
records call the target, so one target's variants become separate report columns and resume
separately. Commas and colons inside brackets or quotes belong to a value
(`onnxruntime:providers=["cuda","cpu"]`), so lists survive the comma-separated --targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlc.errors import InputError
from vlc.plugin_manager import get_target
from vlc.spec import parse_options
from vlc.target import Target

GRAPHS = ("normalized", "raw")
RAW_SUFFIX = "@raw"  # label suffix of cells measured on the plain exporter output


def split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(depth - 1, 0)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def split_entries(text: str) -> list[str]:
    """`torch,onnxruntime:providers=["cuda","cpu"]` -> its entries, empty ones dropped, deduplicated."""
    return list(dict.fromkeys(p for p in split_top(text, ",") if p))


@dataclass(frozen=True)
class TargetVariant:
    entry: str  # the --targets entry, normalized: name[:key=value...]
    target: Target
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # what records call it: the entry, plus RAW_SUFFIX for raw graphs

    def matches(self, name: str) -> bool:
        """--emit-targets names a variant by its entry or by its target's name (all its variants)."""
        return parse_entry(name)[2] in (self.entry, self.target.name)


def parse_entry(text: str) -> tuple[str, dict[str, Any], str]:
    """`name:key=value:...` -> (target name, options, normalized entry)."""
    name, *items = split_top(text.strip(), ":")
    if not name:
        raise InputError(f"--targets entry '{text}' has no target name", fix="e.g. --targets torch:mode=compile")
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"cannot read option '{item}' of --targets entry '{text}'",
                             fix="write target options as name:key=value, e.g. torch:mode=compile")
    items = [f"{k.strip()}={v.strip()}" for k, _, v in (i.partition("=") for i in items)]
    return name, parse_options(items), ":".join([name, *items])


def resolve(entries: list[str], graph: str = "normalized") -> list[TargetVariant]:
    """Entries -> variants with their targets (unknown target names raise here, before any work)."""

    if graph not in GRAPHS:
        raise InputError(f"unknown --graph '{graph}'", fix=f"use one of: {', '.join(GRAPHS)}")
    suffix = RAW_SUFFIX if graph == "raw" else ""
    variants: dict[str, TargetVariant] = {}
    for text in entries:
        name, options, entry = parse_entry(text)
        variants.setdefault(entry, TargetVariant(entry, get_target(name), options, entry + suffix))
    return list(variants.values())
