"""Plots for a report, drawn with matplotlib's non-interactive Agg backend into PNG bytes."""

from __future__ import annotations

import io
from typing import Any, Sequence

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
        from vlc.errors import InputError

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
    for label, points, published, colour_key, marker_key in series:
        points = sorted(points)
        colour, marker = style(colour_key, marker_key)
        ax.plot([b for b, _ in points], [v for _, v in points], color=colour,
                linestyle="--" if published else "-", marker=marker,
                alpha=.7 if published else 1.0,
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
