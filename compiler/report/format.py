"""Number formatting shared by tables (reports read like the write-ups: 8.70 ms, 1663/s, 3.18x)."""

from __future__ import annotations

from typing import Any


def ms(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} ms"
    return f"{value:.3g} ms"


def per_s(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}/s"
    return f"{value:.3g}/s"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def sci(value: float | None) -> str:
    if value is None or value != value:
        return "—"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.2e}"


def flops(value: float | None) -> str:
    if not value:
        return "—"
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} FLOP"


def percent(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.3g} %"


def size(count: int | None) -> str:
    """Bytes as the write-ups give them: 172.6 kB, 6.68 MB (decimal units)."""
    if count is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} B"


def fmt(value: Any) -> str:
    """A value in a table cell: floats short but never misleading (see _short), bools yes/no."""
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return _short(value)
        return f"{value:.3e}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def _short(value: float) -> str:
    """Four significant digits; seven just below 1 (cosines: 0.999989 must not read as a
    0.99999 threshold), and never a value below 1 rounded up to "1"."""
    digits = 7 if 0.99 <= abs(value) < 1 else 4
    text = f"{value:.{digits}g}"
    while abs(value) < 1 <= abs(float(text)) and digits < 15:
        digits += 1
        text = f"{value:.{digits}g}"
    return text
