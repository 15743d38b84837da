"""A line chart as inline SVG, readable without colour: each line has its own dash and its name at its end, and
a legend that wraps instead of being cut. It scales with its box, so one drawing serves a phone and a laptop."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 520, 320                                 # the drawing's own units (viewBox)
LEFT, RIGHT, TOP, BOTTOM = 48, 40, 12, 38                # margins for the axes and the lines' end labels
FONT = 14
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
DASHES = ("", "7 4", "2 3", "9 3 2 3", "4 4", "12 4", "1 5", "6 2 2 2 2 2", "14 3 3 3")


@dataclass(frozen=True)
class Series:
    key: str                                  # drawn at the line's end, e.g. "8"
    name: str                                 # in the legend and the line's tooltip
    points: tuple[tuple[float, float], ...]   # (x, y) in order of x


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values from ``low`` to ``high``, about ``count`` of them."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    unit = 10 ** math.floor(math.log10(raw))
    step = min(m * unit for m in (1, 2, 2.5, 5, 10) if m * unit >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _spread(ys: list[float], gap: float) -> list[float]:
    """``ys`` (in order) moved apart to at least ``gap`` between neighbours, so end labels never overlap."""
    out = list(ys)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + gap)
    return out


def line_chart(series: Sequence[Series], title: str, y_title: str, marker: float | None = None,
               element_id: str = "") -> str:
    """The chart as HTML: a title, the SVG, and a legend; ``marker``: a vertical line at that x."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return f'<div class="chart" id="{element_id}"><p class="chart-title">{html.escape(title)}</p>' \
               f'<p>Nothing recorded yet.</p></div>'
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = (y1 - y0) * 0.04 or 0.5
    y0, y1 = y0 - pad, y1 + pad
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1) * width

    def py(y: float) -> float:
        return TOP + (y1 - y) / (y1 - y0) * height

    parts = []
    for tick in _ticks(y0, y1):
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + width}" y1="{py(tick):.1f}" y2="{py(tick):.1f}"/>'
                     f'<text x="{LEFT - 5}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for tick in _ticks(x0, x1, 4):  # four: "2,000" is five characters wide
        parts.append(f'<line class="grid" x1="{px(tick):.1f}" x2="{px(tick):.1f}" y1="{TOP}" y2="{TOP + height}"/>'
                     f'<text x="{px(tick):.1f}" y="{TOP + height + FONT + 4}" text-anchor="middle">{tick:,.0f}</text>')
    parts.append(f'<text x="{LEFT + width / 2}" y="{HEIGHT - 3}" text-anchor="middle">training step</text>'
                 f'<text transform="translate(13 {TOP + height / 2}) rotate(-90)" text-anchor="middle">'
                 f'{html.escape(y_title)}</text>')
    if marker is not None and x0 <= marker <= x1:
        parts.append(f'<line class="marker" x1="{px(marker):.1f}" x2="{px(marker):.1f}" y1="{TOP}" '
                     f'y2="{TOP + height}"><title>step {marker:,.0f}</title></line>')
    ends = []
    for i, s in enumerate(drawn):
        colour, dash = COLOURS[i % len(COLOURS)], DASHES[i % len(DASHES)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        parts.append(f'<polyline points="{path}" stroke="{colour}" stroke-dasharray="{dash}">'
                     f'<title>{html.escape(s.name)}</title></polyline>')
        x, y = s.points[-1]
        ends.append((py(y), px(x), s.key, colour))
    ends.sort()
    for (_, x, key, colour), y in zip(ends, _spread([e[0] for e in ends], FONT - 1), strict=True):
        parts.append(f'<text class="end" x="{x + 4:.1f}" y="{y + 4:.1f}" fill="{colour}">{html.escape(key)}</text>')
    legend = "".join(
        f'<span><svg width="30" height="10" aria-hidden="true"><line x1="0" x2="30" y1="5" y2="5" '
        f'stroke="{COLOURS[i % len(COLOURS)]}" stroke-dasharray="{DASHES[i % len(DASHES)]}"/></svg>'
        f'{html.escape(s.name)}</span>' for i, s in enumerate(drawn))
    return (f'<div class="chart" id="{element_id}"><p class="chart-title">{html.escape(title)}</p>'
            f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">{"".join(parts)}</svg>'
            f'<div class="chart-legend">{legend}</div></div>')


CSS = """
.chart { min-width: 0; }
.chart-title { font-weight: 600; margin: 0 0 0.2rem; }
.chart svg { width: 100%; max-width: 640px; height: auto; display: block; font-size: 14px; fill: currentColor; }
.chart svg .grid { stroke: var(--border-color-primary); stroke-width: 0.6; }
.chart svg polyline { fill: none; stroke-width: 2; stroke-linejoin: round; }
.chart svg .marker { stroke: currentColor; stroke-width: 1; stroke-dasharray: 3 3; opacity: 0.7; }
.chart svg .end { font-weight: 700; }
.chart-legend { display: flex; flex-wrap: wrap; gap: 0.2rem 0.9rem; font-size: 0.78rem; margin-top: 0.3rem; }
.chart-legend span { display: inline-flex; align-items: center; gap: 0.3rem; white-space: nowrap; }
.chart-legend svg line { stroke-width: 2; }
"""
