"""Server-side inline SVG charts for the QC page (no JavaScript). Every label is escaped."""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe


def bar_chart(items: list[tuple[str, float | None]], *, lo: float = 0.0, hi: float = 1.0, title: str = "",
              width: int = 560, bar_h: int = 18) -> SafeString:
    """Horizontal bars from ``lo`` to ``hi``; a missing value draws "n/a"."""
    label_w, pad = 170, 4
    plot_w = width - label_w - 60
    height = (bar_h + pad) * max(len(items), 1) + 28
    zero_x = label_w + plot_w * (0.0 - lo) / (hi - lo) if lo < 0 < hi else label_w
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="0" y="14" class="chart-title">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = 24 + i * (bar_h + pad)
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end" class="chart-label">{escape(str(label)[:28])}</text>')
        if value is None:
            parts.append(f'<text x="{label_w + 4}" y="{y + bar_h - 5}" class="chart-na">n/a</text>')
            continue
        v = min(max(float(value), lo), hi)
        x = label_w + plot_w * (v - lo) / (hi - lo)
        left, w = (min(x, zero_x), abs(x - zero_x))
        parts.append(f'<rect x="{left:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" class="chart-bar"/>')
        parts.append(f'<text x="{label_w + plot_w + 6}" y="{y + bar_h - 5}" class="chart-value">{float(value):.2f}</text>')
    parts.append(f'<line x1="{zero_x:.1f}" y1="20" x2="{zero_x:.1f}" y2="{height}" class="chart-axis"/>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every interpolated string above is escaped
