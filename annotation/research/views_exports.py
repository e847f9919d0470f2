"""Researcher pages for exports and the checkpoint leaderboard (function views; htmx requests get partials).

- ``/research/exports/``: list, create form (htmx: the form partial comes back with the error);
- ``/research/exports/<id>/``: status with live progress (the partial polls itself every second until done);
- ``/research/exports/<id>/download/``: a redirect to a fresh time-limited URL of the artifact;
- ``/research/leaderboard/``: Bradley-Terry table, a chart of strengths with 95 % intervals, win-rate matrix."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation import charts
from annotation.errors import ApplicationError, error_messages, html_errors, is_int
from annotation.leaderboard import leaderboard
from annotation.models import Export, PreferencePair
from annotation.permissions import researcher_required
from annotation.selectors.advice import leaderboard_warnings
from annotation.selectors.exports import export_download_url, export_list
from annotation.selectors.research import category_choices, reward_means_by_checkpoint, round_choices
from annotation.services.exports import ExportError, export_create

ERR_NOT_READY = "This export is not finished yet."
MEDIA_CHOICES = (
    ("none", "None: video URIs on this server"),
    ("bundle", "Bundle: the videos go into the download"),
    ("links", "Links: signed video URLs that expire"),
)


def _form_context(data=None, error: str | None = None) -> dict:
    return {
        "formats": Export.Format.choices,
        "media_modes": MEDIA_CHOICES,
        "sources": PreferencePair.Source.choices,
        "rounds": round_choices(),
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
        "include_evaluation": data.get("include_evaluation") or None,  # evaluation rounds only when asked
        "media": data.get("media") or None,
        "media_ttl_s": (data.get("media_ttl_s") or None) if data.get("media") == "links" else None,
    }
    if flt["media"] == "links":  # local storage's signed links are made absolute with the address asked at
        flt["media_base_url"] = request.build_absolute_uri("/")
    try:
        export = export_create(format=data.get("format", ""), filter=flt, actor=request.user)
    except ExportError as exc:
        form = {"format": data.get("format", ""), **{k: v for k, v in flt.items()},
                "media_ttl_s": data.get("media_ttl_s") or None}
        context = _form_context(form, " ".join(error_messages(exc)))
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
    url = export_download_url(export=export, user=request.user)
    if url is None:
        raise Http404(ERR_NOT_READY)
    return HttpResponseRedirect(url)


# -- leaderboard ----------------------------------------------------------------------------------------------------
def strength_chart(rows: list[dict]) -> dict:
    """Elo-scale strengths as points with their 95 % bootstrap interval; the dashed line is the mean (1000)."""
    return charts.interval_chart(
        title="Strength (Elo scale) with 95% bootstrap interval", value_label="Elo", reference=1000.0,
        rows=[(r["name"], r["elo"], r["elo_low"], r["elo_high"]) for r in rows],
    )


ERR_ROUNDS = "Rounds must be round numbers separated by commas, not {value!r}."


def _int_list(values) -> list[int]:
    """Round numbers from ``rounds=1,2&rounds=3`` (blank parts ignored); anything else is a 400 with a message."""
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            if not is_int(part):
                raise ApplicationError(ERR_ROUNDS.format(value=part[:40]))
            out.append(int(part))
    return out


@researcher_required
@require_GET
@html_errors
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    rounds = _int_list(request.GET.getlist("rounds"))
    category = request.GET.get("category") or None
    board = leaderboard(rounds=rounds or None, category=category, n_boot=200)
    matrix = board["win_matrix"]
    reward = reward_means_by_checkpoint(checkpoint_ids=[r["checkpoint_id"] for r in board["checkpoints"]],
                                        round_ids=rounds or None)
    for r in board["checkpoints"]:
        r["reward_mean"], r["reward_n"] = reward["means"].get(r["checkpoint_id"], (None, 0))
    categories = list(category_choices())
    names = dict(categories)
    for c in board["categories"]:  # the category's name for people, its slug in the board's JSON
        c["name"] = names.get(c["category"], c["category"] or "uncategorised")
    context = {
        "reward_run": reward["run"],
        "board": board,
        "chart": strength_chart(board["checkpoints"]),
        "matrix_rows": list(zip(matrix["names"], matrix["rates"], matrix["games"], strict=True)),
        "all_rounds": round_choices(),
        "categories": categories,
        "selected_rounds": rounds,
        "selected_category": category,
        "warnings": leaderboard_warnings(board),  # few prompts, mostly ties: say so before anyone acts on it
    }
    template = "research/leaderboard_board.html" if request.htmx else "research/leaderboard.html"
    return render(request, template, context)
