"""Small server-side SVG charts (no JavaScript library): training curves on the DPO run page."""

from __future__ import annotations

from django.utils.html import escape


def line_chart_svg(points: list[tuple[float, float]], *, title: str, width: int = 420, height: int = 180) -> str:
    """An inline SVG polyline of (x, y) points with min/max labels; an empty chart says 'no data yet'."""
    pad = 32
    if not points:
        return (f'<svg class="chart" width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
                f'<text x="{pad}" y="{height / 2}">{escape(title)}: no data yet</text></svg>')
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1e-9

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    return (
        f'<svg class="chart" width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
        f'<text x="{pad}" y="14" class="chart-title">{escape(title)} (last {ys[-1]:.4g})</text>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="axis"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="axis"/>'
        f'<text x="2" y="{pad + 4}" class="tick">{y1:.3g}</text><text x="2" y="{height - pad}" class="tick">{y0:.3g}</text>'
        f'<text x="{width - pad - 20}" y="{height - 8}" class="tick">step {x1:g}</text>'
        f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{path}"/></svg>'
    )
