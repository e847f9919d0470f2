"""The one chart layer, server side: each function returns the JSON spec of one chart, which a page puts in the HTML
with ``json_script`` (the ``annotation/partials/chart.html`` include) and ``static/annotation/charts.js`` draws with
the vendored Chart.js: axes with titles, values on hover, rounded for people; line charts get smoothing (an EMA, as
TensorBoard's slider), a log-scale switch and one series per run, so several DPO runs overlay on one chart.

No HTML is built here: labels travel as JSON strings and the browser sets them as text, so nothing needs escaping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

SIGNIFICANT_DIGITS = 4


def rounded(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """``value`` to ``digits`` significant digits (what people read; the charts' JSON carries no 16-digit floats);
    None for a missing or non-finite value."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def bar_chart(*, title: str, items: Iterable[tuple[str, float | None]], lo: float = 0.0, hi: float = 1.0,
              value_label: str = "") -> dict:
    """Horizontal bars from ``lo`` to ``hi``, one per (label, value); a missing value shows as "n/a"."""
    items = list(items)
    return {
        "kind": "bar", "title": title, "value_label": value_label or title, "min": lo, "max": hi,
        "labels": [str(label) for label, _ in items], "values": [rounded(v) for _, v in items],
    }


def line_chart(*, title: str, series: Sequence[tuple[str, Iterable[tuple[float, float]]]], x_label: str = "step",
               y_label: str = "", smoothing: float = 0.6) -> dict:
    """One line per (name, points); ``smoothing`` is the initial EMA weight in [0, 1) (the page has a slider)."""
    out = []
    for name, points in series:
        pts = [[rounded(x, 12), rounded(y)] for x, y in points if isinstance(y, int | float) and math.isfinite(y)]
        out.append({"name": str(name), "points": pts})
    return {"kind": "line", "title": title, "x_label": x_label, "y_label": y_label or title,
            "smoothing": smoothing, "series": out}


def interval_chart(*, title: str, rows: Iterable[tuple[str, float, float | None, float | None]],
                   value_label: str = "", reference: float | None = None) -> dict:
    """One row per (label, value, low, high): a point with its interval as a bar; ``reference`` draws a line."""
    rows = list(rows)
    return {
        "kind": "interval", "title": title, "value_label": value_label or title, "reference": reference,
        "labels": [str(r[0]) for r in rows], "values": [rounded(r[1]) for r in rows],
        "low": [rounded(r[2]) for r in rows], "high": [rounded(r[3]) for r in rows],
    }
