"""Target options (`-O key=value`): a schema each target declares once, parsed by the Target base class.

A target lists its options as `OptionInfo(help, type, default, choices, parse)`. The base class
turns what the user typed (text, or JSON when it looks like JSON) into typed values before any
work, with one error line naming the option, the value and what it accepts. Typed values are
JSON values (bool, int, float, str, lists and dicts of them), so a spec written into a manifest
reads back equal, and every parser accepts its own output (a stored spec parses again unchanged).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vlc.errors import InputError

TRUE_WORDS = ("1", "true", "on", "yes")
FALSE_WORDS = ("0", "false", "off", "no")


def boolean(value: Any) -> bool:
    """true/false, on/off, yes/no, 1/0 (or JSON true/false)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError("is not a boolean (true/false, on/off)")


def integer(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError("is not an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("is not an integer") from None


def non_negative(value: Any) -> int:
    number = integer(value)
    if number < 0:
        raise ValueError("is not a non-negative integer")
    return number


def number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("is not a number")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError("is not a number") from None
    if math.isnan(result):
        raise ValueError("is not a number")
    return result


def cosine(value: Any) -> float:
    """A cosine goal in (0, 1]."""
    try:
        result = number(value)
    except ValueError:
        result = math.nan
    if not 0 < result <= 1:
        raise ValueError("is not a cosine in (0, 1]")
    return result


def text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # what the user typed before JSON read it
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError("is not a single value")


def lower_text(value: Any) -> str:
    return text(value).strip().lower()


def words(value: Any) -> list[str]:
    """A list: JSON `["a","b"]`, or `a,b` (a single number is a one-item list)."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    raise ValueError("is not a list")


def positive_ints(value: Any) -> list[int]:
    """Batch sizes: `[1,4,8]`, `1,4,8` or `4`; sorted, each once, every one >= 1."""
    try:
        items = [integer(v) for v in words(value)]
    except ValueError:
        raise ValueError("does not list batch sizes") from None
    if any(v <= 0 for v in items):
        raise ValueError("has a batch size <= 0")
    return sorted(set(items))


_BY_TYPE: dict[type, Callable[[Any], Any]] = {bool: boolean, int: integer, float: number, str: text,
                                              list: words}


def shown(value: Any) -> str:
    """A value as the user would have typed it."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


@dataclass(frozen=True)
class OptionInfo:
    """One `-O` option: its help text, type, default (parsed like a user value), the values it
    accepts (`choices`, checked after parsing; every item of a list) and an optional parser that
    replaces the type's (it raises ValueError with the reason, or an InputError of its own)."""

    help: str
    type: type = str
    default: Any = None
    choices: tuple[Any, ...] = ()
    parse: Callable[[Any], Any] | None = None

    def coerce(self, name: str, value: Any) -> Any:
        """The typed value of `-O name=value`; None stays None (the option is not set)."""
        if value is None:
            return None
        parser = self.parse or _BY_TYPE.get(self.type, text)
        try:
            typed = parser(value)
        except InputError:
            raise
        except (TypeError, ValueError) as exc:
            reason = str(exc) or f"is not a valid {self.type.__name__}"
            raise InputError(f"-O {name}={shown(value)} {reason}", fix=self.fix(name)) from None
        if self.choices:
            items = typed if isinstance(typed, list) else [typed]
            if bad := [v for v in items if v not in self.choices]:
                which = "" if not isinstance(typed, list) else f": {shown(bad[0])}"
                raise InputError(f"-O {name}={shown(value)}{which} is not one of "
                                 f"{', '.join(map(str, self.choices))}", fix=self.fix(name))
        return typed

    def fix(self, name: str) -> str:
        if self.choices:
            return f"use -O {name}=<{'|'.join(map(str, self.choices))}>"
        return f"{name}: {self.help}"

    def describe(self) -> dict[str, Any]:
        """What `vlc targets --json` shows of the option."""
        return {"help": self.help, "type": self.type.__name__, "default": self.default,
                "choices": list(self.choices) or None}


def parse_target_options(target: str, schema: Mapping[str, OptionInfo], given: Mapping[str, Any], *,
                         strict: bool = True) -> dict[str, Any]:
    """Every option of `schema` with its typed value (the default where not given). Unknown names
    are an error when `strict`; a stored spec (strict=False) drops names this vlc does not know."""
    if strict and (unknown := sorted(set(given) - set(schema))):
        known = ", ".join(sorted(schema)) or "none"
        raise InputError(f"unknown option(s) {', '.join(unknown)} for target '{target}'",
                         fix=f"options of this target: {known}")
    typed = {}
    for name, info in schema.items():
        value = given.get(name)
        typed[name] = info.coerce(name, info.default if value is None else value)
    return typed
