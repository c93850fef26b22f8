"""HTML building blocks of the report: escaped text, numeric cells, tables, notes.

Every numeric cell carries its exact value in ``data-value`` (Python's shortest round-trip
``repr``) and, when shown, its spread in ``data-se`` or ``data-std``; ``data-key`` names the
cell (``section/row/column``) so the numbers can be checked against the run's files.
"""

from __future__ import annotations

import hashlib
import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MISSING_TEXT = "–"


def esc(value: Any) -> str:
    """``value`` as escaped HTML text (quotes included)."""
    return html.escape(str(value), quote=True)


def number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, NaN, not a number, a bool)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def fmt(value: Any, digits: int = 4) -> str:
    """A value for display: text as is, integers as integers, other numbers with ``digits``
    decimals, missing values as a dash."""
    if isinstance(value, str):
        return value
    x = number(value)
    if x is None:
        return MISSING_TEXT
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{x:.{digits}f}"


def fmt_count(value: Any) -> str:
    """A count for display (a float holding an integer is shown without decimals)."""
    x = number(value)
    if x is None:
        return MISSING_TEXT
    return str(int(x)) if x.is_integer() else f"{x:.2f}"


def _exact(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    x = number(value)
    return "" if x is None else repr(x)


def num_cell(value: Any, *, key: str | None = None, digits: int = 4, spread: Any = None,
             spread_kind: str = "se", count: bool = False) -> str:
    """A right-aligned ``<td>`` with the value (and ``± spread``) and its exact data attributes.

    Args:
        value: the number (``None``/NaN shows a dash).
        key: ``data-key`` naming the cell.
        digits: decimals shown.
        spread: standard error or deviation shown after ``±`` (omitted when missing).
        spread_kind: ``"se"`` or ``"std"``: the data attribute of the spread.
        count: show as a count (no decimals when the value is a whole number).
    """
    text = fmt_count(value) if count else fmt(value, digits)
    attrs = [' class="num"']
    if key is not None:
        attrs.append(f' data-key="{esc(key)}"')
    exact = _exact(value)
    if exact:
        attrs.append(f' data-value="{esc(exact)}"')
    if number(spread) is not None and number(value) is not None:
        text += f" ± {fmt(spread, digits)}"
        attrs.append(f' data-{spread_kind}="{esc(_exact(spread))}"')
    return f"<td{''.join(attrs)}>{esc(text)}</td>"


def text_cell(value: Any, *, key: str | None = None, header: bool = False) -> str:
    """A ``<td>`` (or row ``<th>``) holding escaped text."""
    tag = "th" if header else "td"
    attr = f' data-key="{esc(key)}"' if key is not None else ""
    scope = ' scope="row"' if header else ""
    shown = MISSING_TEXT if value is None else value
    return f"<{tag}{scope}{attr}>{esc(shown)}</{tag}>"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, caption: str | None = None,
          table_id: str | None = None) -> str:
    """A ``<table>``: escaped headers, rows of ready cells (from :func:`num_cell` /
    :func:`text_cell`)."""
    ident = f' id="{esc(table_id)}"' if table_id else ""
    parts = [f"<table{ident}>"]
    if caption:
        parts.append(f"<caption>{esc(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
                 + "</tr></thead><tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def paragraph(text: str, *, cls: str | None = None) -> str:
    """A ``<p>`` of escaped text."""
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def code(text: str) -> str:
    """Escaped inline ``<code>``."""
    return f"<code>{esc(text)}</code>"


def details(summary: str, body: str) -> str:
    """A collapsed ``<details>`` block with an escaped summary and ready HTML body."""
    return f"<details><summary>{esc(summary)}</summary>{body}</details>"


#: plotly's configuration of every chart: no logo, no cloud links, resizes with the page.
PLOT_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True,
                               "modeBarButtonsToRemove": ["sendDataToCloud"]}


def figure(fig: Any, caption: str) -> str:
    """A ``<figure>`` holding a plotly chart (a ``div`` drawn by the page's one copy of
    plotly.js, see :func:`~mechrec_recsys.report.render.render_sections`) and an escaped
    caption.

    The ``div``'s id is a digest of the figure and caption, so the same outputs render the same
    page.
    """
    data = fig.to_json()
    ident = "plot-" + hashlib.sha1((data + caption).encode("utf-8")).hexdigest()[:16]
    chart = fig.to_html(full_html=False, include_plotlyjs=False, div_id=ident,
                        config=PLOT_CONFIG, default_height=f"{fig.layout.height or 340}px")
    return (f'<figure class="plot">{chart}<figcaption>{esc(caption)}</figcaption></figure>')


def missing_note(what: str, path: Any, reason: str, commands: Sequence[str]) -> str:
    """A visible note that an output is not available and which commands produce it."""
    lines = "".join(f"<li>{code(command)}</li>" for command in commands)
    return (f'<div class="missing"><p><strong>{esc(what)} is not available:</strong> '
            f"{code(str(path))} is {esc(reason)}.</p><p>Produce it with:</p><ul>{lines}</ul>"
            "</div>")
