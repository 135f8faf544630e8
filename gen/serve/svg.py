"""Plots as server-made SVG: no JavaScript, no build step, and every mark carries its data.

Each chart is an `<svg class="plot" data-plot=NAME data-points=N>`; each bar or point has `data-label`/`data-series`,
`data-value` and a `<title>` (the browser's tooltip), so the numbers can be read off the page, by people and tests.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 40
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


def number(v: float) -> str:
    if v == int(v):
        return str(int(v))
    return f"{v:.4g}" if abs(v) < 1 else f"{v:.2f}"


def _open(name: str, title: str, points: int, height: int = HEIGHT) -> list[str]:
    return [f'<svg class="plot" data-plot="{escape(name)}" data-points="{points}" role="img" '
            f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
            f'<title>{escape(title)}</title>',
            f'<text x="{LEFT}" y="16" class="plot-title">{escape(title)}</text>']


def _empty(name: str, title: str, note: str) -> Markup:
    parts = _open(name, title, 0, 80)
    parts.append(f'<text x="{LEFT}" y="52" class="plot-empty">{escape(note)}</text></svg>')
    return Markup("".join(parts))


def _nice_max(v: float) -> float:
    """The axis top: the smallest round number (1, 1.2, 1.5, 2, ... 8 times a power of ten) at or above v."""
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * exp >= v * (1 - 1e-9):
            return m * exp
    return v


def _y_axis(parts: list[str], top_value: float, plot_h: int) -> None:
    for i in range(5):
        v = top_value * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{number(v)}</text>')


def bar_chart(name: str, title: str, bars: Sequence[tuple[str, float]], *, empty: str = "nothing yet") -> Markup:
    """Vertical bars, one per (label, value): histograms and small category counts."""
    if not bars:
        return _empty(name, title, empty)
    parts = _open(name, title, len(bars))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top_value = _nice_max(max(v for _, v in bars))
    _y_axis(parts, top_value, plot_h)
    slot = plot_w / len(bars)
    for i, (label, value) in enumerate(bars):
        h = plot_h * value / top_value
        x = LEFT + i * slot + slot * 0.1
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{slot * 0.8:.1f}" '
                     f'height="{h:.1f}" fill="{COLOURS[0]}" data-label="{escape(str(label))}" '
                     f'data-value="{number(value)}"><title>{escape(str(label))}: {number(value)}</title></rect>')
        if i % math.ceil(len(bars) / (12 if len(str(label)) <= 4 else 6)) == 0:
            parts.append(f'<text x="{x + slot * 0.4:.1f}" y="{HEIGHT - BOTTOM + 16}" class="tick" '
                         f'text-anchor="middle">{escape(str(label)[:12])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def hbar_chart(name: str, title: str, bars: Sequence[tuple[str, float]], *, empty: str = "nothing yet") -> Markup:
    """Horizontal bars with their labels written out: reasons, outcomes (long labels)."""
    if not bars:
        return _empty(name, title, empty)
    row = 22
    height = TOP + row * len(bars) + 12
    parts = _open(name, title, len(bars), height)
    label_w, plot_w = 330, WIDTH - 330 - RIGHT - 40
    top_value = max(v for _, v in bars) or 1
    for i, (label, value) in enumerate(bars):
        y = TOP + i * row
        w = plot_w * value / top_value
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" class="tick" text-anchor="end">'
                     f'{escape(label[:52] + ("…" if len(label) > 52 else ""))}</text>')
        parts.append(f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 6}" '
                     f'fill="{COLOURS[1]}" data-label="{escape(label)}" data-value="{number(value)}">'
                     f'<title>{escape(label)}: {number(value)}</title></rect>')
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" class="tick">{number(value)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(name: str, title: str, x: Sequence[float], series: dict[str, Sequence[float]], *,
               empty: str = "nothing yet") -> Markup:
    """One line per series over time; x in epoch seconds (UTC)."""
    if not x or not series:
        return _empty(name, title, empty)
    points = len(x) * len(series)
    parts = _open(name, title, points)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top_value = _nice_max(max((max(v) for v in series.values() if v), default=0))
    _y_axis(parts, top_value, plot_h)
    span = (x[-1] - x[0]) or 1.0

    def px(t: float) -> float:
        return LEFT + plot_w * (t - x[0]) / span if len(x) > 1 else LEFT + plot_w / 2

    for t, anchor in ((x[0], "start"), (x[-1], "end")) if len(x) > 1 else ((x[0], "middle"),):
        stamp = datetime.fromtimestamp(t, tz=timezone.utc)
        label = stamp.strftime("%H:%M:%S") + (f".{stamp.microsecond // 100000}" if span < 10 else "") + " UTC"
        parts.append(f'<text x="{px(t):.1f}" y="{HEIGHT - BOTTOM + 16}" class="tick" '
                     f'text-anchor="{anchor}">{label}</text>')
    for i, (sname, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = [(px(t), TOP + plot_h - plot_h * v / top_value) for t, v in zip(x, values)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" data-series="{escape(sname)}" '
                     f'points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in coords)}"/>')
        for (cx, cy), t, v in zip(coords, x, values):
            when = datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            parts.append(f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="{colour}" '
                         f'data-series="{escape(sname)}" data-x="{when}" data-value="{number(v)}">'
                         f'<title>{escape(sname)} at {when} UTC: {number(v)}</title></circle>')
        lx = LEFT + 8 + i * 120
        parts.append(f'<rect x="{lx}" y="{HEIGHT - 14}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="{HEIGHT - 5}" class="tick">{escape(sname[:16])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram_bins(values: Sequence[float], bins: int = 10) -> list[tuple[str, float]]:
    """Counts of `values` in up to `bins` equal ranges (one bar per value when there are few distinct ones)."""
    if not values:
        return []
    distinct = sorted(set(values))
    if distinct[-1] - distinct[0] < bins:  # a few whole numbers: one bar each
        return [(number(v), float(sum(1 for x in values if x == v))) for v in distinct]
    lo, hi = distinct[0], distinct[-1]
    whole = all(float(v).is_integer() for v in distinct)
    width = math.ceil((hi - lo + 1) / bins) if whole else (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    if whole:
        return [(f"{number(lo + i * width)}–{number(lo + (i + 1) * width - 1)}", float(c)) for i, c in enumerate(counts)]
    return [(f"{number(lo + i * width)}–{number(lo + (i + 1) * width)}", float(c)) for i, c in enumerate(counts)]
