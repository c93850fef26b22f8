"""Tiny inline-SVG charts: lines (with optional ± bands and reference lines) and grouped bars.

Pure Python string building, no dependencies, no scripts: each function returns one
``<svg>`` element ready to paste into an HTML page. Every label is escaped. Points whose value
is ``None`` or NaN are left out (a line breaks there). Each point and bar carries a ``<title>``
tooltip with its exact value.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Colour-blind-safe palette (Okabe-Ito), used in series order.
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00",
                            "#56B4E9", "#F0E442", "#000000")
_FONT = "font-family:system-ui,sans-serif"


@dataclass(frozen=True)
class Series:
    """One line of a :func:`line_chart`.

    Attributes:
        name: legend label.
        x: x values.
        y: y values (``None``/NaN: no point).
        err: optional half-widths of a shaded band around ``y`` (e.g. standard errors).
        dashed: draw a dashed line.
        color: CSS colour (default: the palette, in series order).
    """

    name: str
    x: Sequence[float]
    y: Sequence[float | None]
    err: Sequence[float | None] | None = None
    dashed: bool = False
    color: str | None = None


def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def nice_ticks(low: float, high: float, count: int = 5, *, integer: bool = False
               ) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (steps of 1, 2 or 5 x 10^n;
    whole steps only when ``integer``, e.g. for epochs)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    if integer:
        raw = max(raw, 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.5 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def format_tick(value: float, ticks: Sequence[float]) -> str:
    """A tick label with as many decimals as the tick spacing needs."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    text = f"{value:.{min(decimals, 6)}f}"
    return "0" if text.strip("-0.") == "" else text


def _text(x: float, y: float, text: str, *, anchor: str = "middle", size: int = 11,
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'style="{_FONT}"{extra}>{html.escape(text)}</text>')


def _legend(names: Sequence[str], colors: Sequence[str], dashed: Sequence[bool], left: float,
            top: float, width: float) -> tuple[str, float]:
    """Legend rows of swatches and labels; returns the SVG and its height."""
    parts, x, y = [], left, top
    for name, color, dash in zip(names, colors, dashed, strict=True):
        item_width = 28 + 6.5 * len(name)
        if x + item_width > left + width and x > left:
            x, y = left, y + 16
        style = ' stroke-dasharray="5 3"' if dash else ""
        parts.append(f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 20:.1f}" y2="{y - 4:.1f}" '
                     f'stroke="{color}" stroke-width="2.5"{style}/>')
        parts.append(_text(x + 24, y, name, anchor="start", size=11))
        x += item_width
    return "".join(parts), (y - top) + 16


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    references: Mapping[str, float] | None = None,
    width: int = 440,
    height: int = 280,
    integer_x: bool = False,
) -> str:
    """A line chart of ``series`` as one ``<svg>`` element.

    Args:
        series: the lines.
        title: chart title.
        x_label, y_label: axis labels.
        references: label -> y value of horizontal grey reference lines (e.g. "unsteered").
        width, height: size in pixels.
        integer_x: x values are counts (epochs, steps): whole-number ticks only.
    """
    references = {k: v for k, v in (references or {}).items() if _finite(v)}
    colors = [s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(series)]
    xs = [float(x) for s in series for x, y in zip(s.x, s.y, strict=True) if _finite(y)]
    ys: list[float] = []
    for s in series:
        errs = s.err if s.err is not None else [None] * len(s.y)
        for y, e in zip(s.y, errs, strict=True):
            if _finite(y):
                ys.append(float(y))
                if _finite(e):
                    ys.extend([float(y) - float(e), float(y) + float(e)])
    ys.extend(references.values())
    left, right, top = 58, 14, 26
    legend_svg, legend_height = _legend([s.name for s in series], colors,
                                        [s.dashed for s in series], left, top + 12,
                                        width - left - right)
    plot_top = top + legend_height + 8
    bottom = 44
    plot_h = height - plot_top - bottom
    plot_w = width - left - right
    out = [f'<svg class="chart" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}"><title>{html.escape(title)}</title>',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
           _text(width / 2, 16, title, size=13, extra=' font-weight="600"'), legend_svg]
    if not xs or not ys:
        out.append(_text(width / 2, plot_top + plot_h / 2, "no data"))
        out.append("</svg>")
        return "".join(out)
    x_ticks = nice_ticks(min(xs), max(xs), 6, integer=integer_x)
    y_ticks = nice_ticks(min(ys), max(ys), 5)
    x0, x1 = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y0, y1 = y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    def py(y: float) -> float:
        return plot_top + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    for tick in y_ticks:
        out.append(f'<line x1="{left}" y1="{py(tick):.1f}" x2="{left + plot_w}" '
                   f'y2="{py(tick):.1f}" stroke="#e5e5e5"/>')
        out.append(_text(left - 6, py(tick) + 4, format_tick(tick, y_ticks), anchor="end",
                         size=10))
    for tick in x_ticks:
        out.append(f'<line x1="{px(tick):.1f}" y1="{plot_top + plot_h}" x2="{px(tick):.1f}" '
                   f'y2="{plot_top + plot_h + 4}" stroke="#555"/>')
        out.append(_text(px(tick), plot_top + plot_h + 16, format_tick(tick, x_ticks), size=10))
    out.append(f'<rect x="{left}" y="{plot_top}" width="{plot_w}" height="{plot_h}" '
               'fill="none" stroke="#999"/>')
    out.append(_text(left + plot_w / 2, height - 8, x_label, size=11))
    out.append(_text(14, plot_top + plot_h / 2, y_label, size=11,
                     extra=f' transform="rotate(-90 14 {plot_top + plot_h / 2:.1f})"'))
    for label, value in references.items():
        out.append(f'<line x1="{left}" y1="{py(value):.1f}" x2="{left + plot_w}" '
                   f'y2="{py(value):.1f}" stroke="#777" stroke-dasharray="2 3">'
                   f'<title>{html.escape(f"{label}: {value:.4g}")}</title></line>')
        out.append(_text(left + plot_w - 4, py(value) - 4, label, anchor="end", size=9,
                         extra=' fill="#555"'))
    for s, color in zip(series, colors, strict=True):
        errs = s.err if s.err is not None else [None] * len(s.y)
        points = [(float(x), float(y), float(e) if _finite(e) else None)
                  for x, y, e in zip(s.x, s.y, errs, strict=True) if _finite(y)]
        points.sort()
        band = [(x, y, e) for x, y, e in points if e is not None]
        if len(band) > 1:
            upper = " ".join(f"{px(x):.1f},{py(y + e):.1f}" for x, y, e in band)
            lower = " ".join(f"{px(x):.1f},{py(y - e):.1f}" for x, y, e in reversed(band))
            out.append(f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.12" '
                       'stroke="none"/>')
        if len(points) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in points)
            style = ' stroke-dasharray="5 3"' if s.dashed else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                       f'stroke-width="2"{style}/>')
        for x, y, e in points:
            tip = f"{s.name}: x={x:g}, y={y:.4g}" + (f" ± {e:.2g}" if e is not None else "")
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.6" fill="{color}">'
                       f'<title>{html.escape(tip)}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    categories: Sequence[str],
    groups: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    y_label: str,
    height: int = 320,
    bar_width: int = 9,
) -> str:
    """Grouped vertical bars: one cluster per category, one bar per group (as one ``<svg>``).

    Args:
        categories: cluster labels (drawn rotated under the axis).
        groups: legend label -> one value per category (``None``/NaN: no bar).
        title: chart title.
        y_label: axis label.
        height: height in pixels (the width follows from the number of bars).
        bar_width: width of one bar in pixels.
    """
    names = list(groups)
    for name in names:
        if len(groups[name]) != len(categories):
            raise ValueError(f"group {name!r} has {len(groups[name])} values for "
                             f"{len(categories)} categories")
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
    cluster = bar_width * max(len(names), 1) + 10
    left, right, top = 58, 14, 26
    width = max(360, left + right + cluster * len(categories))
    legend_svg, legend_height = _legend(names, colors, [False] * len(names), left, top + 12,
                                        width - left - right)
    longest = max((len(c) for c in categories), default=4)
    bottom = 22 + min(longest, 24) * 5
    plot_top = top + legend_height + 8
    plot_h = height - plot_top - bottom
    plot_w = width - left - right
    values = [float(v) for name in names for v in groups[name] if _finite(v)]
    out = [f'<svg class="chart" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}"><title>{html.escape(title)}</title>',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
           _text(width / 2, 16, title, size=13, extra=' font-weight="600"'), legend_svg]
    if not values:
        out.append(_text(width / 2, plot_top + plot_h / 2, "no data"))
        out.append("</svg>")
        return "".join(out)
    ticks = nice_ticks(min(0.0, min(values)), max(0.0, max(values)), 5)
    y0, y1 = ticks[0], ticks[-1]

    def py(y: float) -> float:
        return plot_top + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    for tick in ticks:
        out.append(f'<line x1="{left}" y1="{py(tick):.1f}" x2="{left + plot_w}" '
                   f'y2="{py(tick):.1f}" stroke="#e5e5e5"/>')
        out.append(_text(left - 6, py(tick) + 4, format_tick(tick, ticks), anchor="end",
                         size=10))
    out.append(f'<line x1="{left}" y1="{py(0.0):.1f}" x2="{left + plot_w}" y2="{py(0.0):.1f}" '
               'stroke="#555"/>')
    for c, category in enumerate(categories):
        start = left + c * cluster + 5
        for g, name in enumerate(names):
            value = groups[name][c]
            if not _finite(value):
                continue
            value = float(value)
            y_top, y_bottom = sorted((py(value), py(0.0)))
            tip = f"{category}, {name}: {value:.4g}"
            out.append(f'<rect x="{start + g * bar_width:.1f}" y="{y_top:.1f}" '
                       f'width="{bar_width - 1}" height="{max(y_bottom - y_top, 0.5):.1f}" '
                       f'fill="{colors[g]}"><title>{html.escape(tip)}</title></rect>')
        label_x = start + cluster / 2 - 5
        label_y = plot_top + plot_h + 10
        out.append(_text(label_x, label_y, category, anchor="end", size=10,
                         extra=f' transform="rotate(-45 {label_x:.1f} {label_y:.1f})"'))
    out.append(_text(14, plot_top + plot_h / 2, y_label, size=11,
                     extra=f' transform="rotate(-90 14 {plot_top + plot_h / 2:.1f})"'))
    out.append("</svg>")
    return "".join(out)
