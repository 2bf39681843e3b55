"""Number formatting shared by tables (reports read like the write-ups: 8.70 ms, 1663/s, 3.18x)."""

from __future__ import annotations


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
