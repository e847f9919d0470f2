"""Researcher pages for exports and the checkpoint leaderboard (function views; htmx requests get partials).

- ``/research/exports/``: list, create form (htmx: the form partial comes back with the error);
- ``/research/exports/<id>/``: status with live progress (the partial polls itself every second until done);
- ``/research/exports/<id>/download/``: a redirect to a fresh time-limited URL of the artifact;
- ``/research/leaderboard/``: Bradley-Terry table, inline SVG of strengths with 95 % intervals, win-rate matrix."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from annotation import permissions
from annotation.leaderboard import leaderboard
from annotation.models import Category, Export, PreferencePair, Round
from annotation.selectors.exports import export_download_url, export_list
from annotation.services.exports import ExportError, export_create

ERR_NOT_RESEARCHER = "Researchers only."
ERR_NOT_READY = "This export is not finished yet."


def researcher_required(view):
    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not permissions.is_researcher(request.user):
            raise PermissionDenied(ERR_NOT_RESEARCHER)
        return view(request, *args, **kwargs)

    return wrapped


def _form_context(data=None, error: str | None = None) -> dict:
    return {
        "formats": Export.Format.choices,
        "sources": PreferencePair.Source.choices,
        "rounds": Round.objects.order_by("-id").values("id", "name", "kind")[:200],
        "form": data or {},
        "error": error,
    }


@researcher_required
@require_GET
def exports_page(request: HttpRequest) -> HttpResponse:
    return render(request, "research/exports.html", {"exports": export_list(), **_form_context()})


@researcher_required
@require_POST
def export_create_view(request: HttpRequest) -> HttpResponse:
    data = request.POST
    flt = {
        "rounds": data.getlist("rounds"),
        "min_agreement": data.get("min_agreement") or None,
        "min_annotators": data.get("min_annotators") or None,
        "source": data.getlist("source"),
        "date_from": data.get("date_from") or None,
        "date_to": data.get("date_to") or None,
    }
    try:
        export = export_create(format=data.get("format", ""), filter=flt, actor=request.user)
    except ExportError as exc:
        form = {"format": data.get("format", ""), **{k: v for k, v in flt.items()}}
        context = _form_context(form, str(exc))
        if request.htmx:
            return render(request, "research/exports_form.html", context)
        return render(request, "research/exports.html", {"exports": export_list(), **context}, status=400)
    url = reverse("research-export-detail", args=[export.pk])
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return HttpResponseRedirect(url)


@researcher_required
@require_GET
def export_detail(request: HttpRequest, export_id: int) -> HttpResponse:
    export = get_object_or_404(Export.objects.select_related("created_by"), pk=export_id)
    context = {"export": export}
    if request.htmx:
        return render(request, "research/exports_status.html", context)
    return render(request, "research/exports_detail.html", context)


@researcher_required
@require_GET
def export_download(request: HttpRequest, export_id: int) -> HttpResponse:
    export = get_object_or_404(Export, pk=export_id)
    url = export_download_url(export=export)
    if url is None:
        raise Http404(ERR_NOT_READY)
    return HttpResponseRedirect(url)


# -- leaderboard ----------------------------------------------------------------------------------------------------
def strength_chart_svg(rows: list[dict], *, width: int = 640, row_h: int = 26) -> str:
    """Elo-scale strengths as dots with their 95 % interval as a bar; every label escaped."""
    label_w, pad_r, top = 170, 50, 28
    height = top + row_h * max(len(rows), 1) + 24
    if not rows:
        return mark_safe(f'<svg class="chart" width="{width}" height="60" role="img" aria-label="strengths">'
                         f'<text x="10" y="30">no comparisons yet</text></svg>')
    values = [v for r in rows for v in (r["elo"], r["elo_low"], r["elo_high"]) if v == v]  # drop NaN
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 50, hi + 50
    margin = (hi - lo) * 0.08
    lo, hi = lo - margin, hi + margin

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * (width - label_w - pad_r)

    parts = [f'<svg class="chart strengths" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="Bradley-Terry strengths with 95% bootstrap intervals" xmlns="http://www.w3.org/2000/svg">',
             '<text x="0" y="16" class="chart-title">Strength (Elo scale) with 95% bootstrap interval</text>']
    if lo < 1000 < hi:
        parts.append(f'<line x1="{x(1000):.1f}" y1="{top - 4}" x2="{x(1000):.1f}" y2="{height - 18}" class="chart-axis" stroke="currentColor" stroke-dasharray="3 3"/>')
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        parts.append(f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end" class="chart-label">{escape(r["name"][:26])}</text>')
        if r["elo_low"] == r["elo_low"] and r["elo_high"] == r["elo_high"]:
            parts.append(f'<line class="ci" x1="{x(r["elo_low"]):.1f}" y1="{y:.1f}" x2="{x(r["elo_high"]):.1f}" y2="{y:.1f}" stroke="currentColor" stroke-width="3" opacity="0.5"/>')
        parts.append(f'<circle class="point" cx="{x(r["elo"]):.1f}" cy="{y:.1f}" r="5" fill="currentColor"/>')
        parts.append(f'<text x="{width - pad_r + 6}" y="{y + 4:.1f}" class="chart-value">{r["elo"]:.0f}</text>')
    parts.append(f'<text x="{label_w}" y="{height - 4}" class="tick">{lo:.0f}</text>')
    parts.append(f'<text x="{width - pad_r}" y="{height - 4}" text-anchor="end" class="tick">{hi:.0f}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every interpolated string is escaped or a number


def _int_list(values) -> list[int]:
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip().isdigit():
                out.append(int(part))
    return out


@researcher_required
@require_GET
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    rounds = _int_list(request.GET.getlist("rounds"))
    category = request.GET.get("category") or None
    board = leaderboard(rounds=rounds or None, category=category, n_boot=200)
    matrix = board["win_matrix"]
    context = {
        "board": board,
        "chart": strength_chart_svg(board["checkpoints"]),
        "matrix_rows": list(zip(matrix["names"], matrix["rates"], matrix["games"], strict=True)),
        "all_rounds": Round.objects.order_by("-id").values("id", "name", "kind")[:200],
        "categories": Category.objects.order_by("name").values_list("slug", "name"),
        "selected_rounds": rounds,
        "selected_category": category,
    }
    template = "research/leaderboard_board.html" if request.htmx else "research/leaderboard.html"
    return render(request, template, context)
