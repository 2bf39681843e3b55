"""Plots for a report, drawn with matplotlib's non-interactive Agg backend into PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from vlc.errors import InputError

# (label, [(batch, value), ...], published?, colour key (target/precision), marker key (device))
Series = tuple[str, Sequence[tuple[int, float]], bool, str, str]
MARKERS = "osD^vP*Xhp<>"


class _Styles:
    """Colour per target/precision, marker per device: the same pair looks the same in every plot."""

    def __init__(self, plt: Any):
        self.colours = list(plt.get_cmap("tab20").colors[0::2]) + list(plt.get_cmap("tab20").colors[1::2])
        self.colour: dict[str, Any] = {}
        self.marker: dict[str, str] = {}

    def __call__(self, colour_key: str, marker_key: str) -> tuple[Any, str]:
        colour = self.colour.setdefault(colour_key, self.colours[len(self.colour) % len(self.colours)])
        marker = self.marker.setdefault(marker_key, MARKERS[len(self.marker) % len(MARKERS)])
        return colour, marker


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("vlc report draws its plots with matplotlib, which is not installed",
                         fix="pip install 'vlc[report]' (or matplotlib), or pass --no-plots") from None
    return plt


def _text(text: str) -> str:
    """Plot text as typed: matplotlib reads a pair of '$' as mathtext (a machine named
    '$\\frac{a}$ box' fails to parse and would sink the whole report)."""
    return text.replace("$", r"\$")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def _batch_axis(ax: Any, batches: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batches))
    ax.set_xticklabels([str(b) for b in batches], rotation=45 if len(batches) > 4 else 0)
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.grid(True, which="major", alpha=.3)


def throughput_plot(title: str, series: list[Series]) -> bytes:
    """Samples per second against batch size, one line per target / precision / device."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    batches = sorted({b for _, points, _, _, _ in series for b, _ in points})
    style = _Styles(plt)
    singles = [s for s in series if s[2] and len(s[1]) == 1]  # published figures at one batch size
    for label, points, published, colour_key, marker_key in series:
        points = sorted(points)
        colour, marker = style(colour_key, marker_key)
        xs: list[float] = [b for b, _ in points]
        if published and len(points) == 1:
            # several write-ups report batch 1 only: spread their markers a little around it so
            # none hides another, hollow so they never read as measurements
            i = next(k for k, s in enumerate(singles) if s[0] == label)
            xs = [xs[0] * 2 ** (0.25 * (i - (len(singles) - 1) / 2) / max(len(singles), 1))]
        ax.plot(xs, [v for _, v in points], color=colour,
                linestyle="--" if published else "-", marker=marker,
                markerfacecolor="none" if published else colour, markersize=7 if published else 6,
                alpha=.8 if published else 1.0,
                label=_text(f"{label} (published, not measured by vlc)" if published else label))
    _batch_axis(ax, batches)
    ax.set_yscale("log")
    ax.set_ylabel("throughput, samples/s (log)")
    ax.set_title(_text(title))
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


LatencyRow = tuple[str, Sequence[tuple[int, dict[str, float]]], str, str]


def latency_plot(title: str, rows: list[LatencyRow]) -> bytes:
    """Median latency per batch with a band from p90 to p99, one line per target/precision/device."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    batches = sorted({b for _, points, _, _ in rows for b, _ in points})
    style = _Styles(plt)
    for label, points, colour_key, marker_key in rows:
        points = sorted(points, key=lambda p: p[0])
        xs = [b for b, _ in points]
        colour, marker = style(colour_key, marker_key)
        (line,) = ax.plot(xs, [s["median"] for _, s in points], marker=marker, color=colour,
                          label=_text(f"{label} p50"))
        if all(s.get("p90") is not None for _, s in points):  # ais_bench summaries give no p90
            ax.fill_between(xs, [s["p90"] for _, s in points], [s["p99"] for _, s in points],
                            color=line.get_color(), alpha=.2)
        ax.plot(xs, [s["p99"] for _, s in points], linestyle=":", color=line.get_color(), linewidth=1)
    _batch_axis(ax, batches)
    ax.set_yscale("log")
    ax.set_ylabel("latency per call, ms (log)")
    ax.set_title(_text(title) + "  (line: p50, band: p90 to p99, dotted: p99)")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


# (label, [(batch, speed-up, (low, high) interval or None)], colour key)
SpeedupBars = tuple[str, Sequence[tuple[int, float, "tuple[float, float] | None"]], str]


def speedup_plot(title: str, bars: list[SpeedupBars]) -> bytes:
    """Grouped bars: the speed-up of each column against the baseline at each batch size, with
    whiskers for its interval where one is known, the baseline as a line at 1."""
    plt = _pyplot()
    batches = sorted({b for _, points, _ in bars for b, *_ in points})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.5 * len(batches) * max(len(bars), 1)), 4.4))
    style = _Styles(plt)
    width = 0.8 / max(len(bars), 1)
    for i, (label, points, colour_key) in enumerate(bars):
        colour, _ = style(colour_key, label)
        values = {b: (v, interval) for b, v, interval in points}
        xs = [k + (i - (len(bars) - 1) / 2) * width for k, b in enumerate(batches) if b in values]
        ys = [values[b][0] for b in batches if b in values]
        drawn = ax.bar(xs, ys, width=width * 0.95, color=colour, label=_text(label))
        ax.bar_label(drawn, labels=[f"{y:.2f}x" for y in ys], fontsize=7, padding=2)
        whiskers: list[tuple[float, float, float, float]] = []  # x, y, low, high
        for x, y, b in zip(xs, ys, [b for b in batches if b in values]):
            if (interval := values[b][1]) is not None:
                whiskers.append((x, y, interval[0], interval[1]))
        if whiskers:  # asymmetric: from the interval's low to its high end
            ax.errorbar([w[0] for w in whiskers], [w[1] for w in whiskers],
                        yerr=[[max(w[1] - w[2], 0.0) for w in whiskers], [max(w[3] - w[1], 0.0) for w in whiskers]],
                        fmt="none", ecolor="black", elinewidth=1, capsize=3)
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_xticks(range(len(batches)))
    ax.set_xticklabels([str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("speed-up (baseline latency / latency)")
    ax.set_yscale("log")
    ax.grid(True, axis="y", which="major", alpha=.3)
    ax.set_title(_text(title))
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)
