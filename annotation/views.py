"""HTML views (function views; htmx requests get partials). Permission checks in each view."""

from __future__ import annotations

import time

from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation import charts, permissions, storage
from annotation.media import assignment_media_unsign, ranged_file_response
from annotation.models import CandidateGroup, CandidateLabel, Judgment, PromptSet, ReviewItem, Round
from annotation.selectors.groups import (
    flaw_tags_active,
    group_page_for_assignments,
    guidelines_html,
    media_key_for_token,
)
from annotation.selectors.stats import annotator_stats, round_quality
from annotation.selectors.workbench import groups_generating_count
from annotation.services.assignments import AnnotatorPausedError, assignments_for_annotator
from annotation.services.judgments import FlawInput, JudgmentError, LabelInput, judgment_submit
from annotation.services.reviews import ReviewError, review_item_resolve

ERR_NOT_ANNOTATOR = "Only annotators can judge groups."
ERR_NOT_REVIEWER = "Only reviewers and researchers can see this page."
ERR_BAD_FORM = "The form was incomplete or malformed ({detail})."

SKIP_REASONS = [
    ("broken", "A video does not play or is broken"),
    ("unsure", "I cannot judge this prompt"),
    ("offensive", "Offensive or unsafe content"),
    ("other", "Other"),
]


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})


def _forbidden(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "annotation/forbidden.html", {"message": message}, status=403)


def _require_annotator(request: HttpRequest) -> HttpResponse | None:
    return None if permissions.is_annotator(request.user) else _forbidden(request, ERR_NOT_ANNOTATOR)


def _require_reviewer(request: HttpRequest) -> HttpResponse | None:
    return None if permissions.is_reviewer(request.user) else _forbidden(request, ERR_NOT_REVIEWER)


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    context = {
        "is_researcher": permissions.is_researcher(user),
        "is_reviewer": permissions.is_reviewer(user),
        "is_annotator": permissions.is_annotator(user),
    }
    if context["is_annotator"]:
        profile = getattr(user, "annotator_profile", None)
        context["paused"] = bool(profile and profile.is_paused)
        context["paused_reason"] = profile.paused_reason if profile else ""
        context["stats"] = annotator_stats(annotator_id=user.pk, with_peers=False)
        context["guidelines"] = [
            (ps.name, guidelines_html(ps.guidelines_md))
            for ps in PromptSet.objects.exclude(guidelines_md="").order_by("name")[:10]
        ]
    return render(request, "annotation/home.html", context)


def _workbench_context(request: HttpRequest, error: str = "") -> dict:
    assignments = assignments_for_annotator(annotator=request.user)
    page = group_page_for_assignments(assignments=assignments)
    return {
        "page": page,
        "generating": 0 if page else groups_generating_count(),
        "flaw_tags": flaw_tags_active(),
        "skip_reasons": SKIP_REASONS,
        "error": error,
        "done_today": Judgment.objects.filter(annotator=request.user, created_at__gte=_today()).count(),
    }


def _today():
    from django.utils import timezone

    return timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)


def _paused(request: HttpRequest, exc: AnnotatorPausedError) -> HttpResponse:
    return render(request, "annotation/paused.html", {"message": str(exc)}, status=403)


@login_required
@require_GET
def annotate(request: HttpRequest) -> HttpResponse:
    """The workbench: the annotator's current group (full page, or the group partial for htmx)."""
    if denied := _require_annotator(request):
        return denied
    try:
        context = _workbench_context(request)
    except AnnotatorPausedError as exc:
        return _paused(request, exc)
    template = "annotation/partials/group.html" if request.htmx else "annotation/annotate.html"
    return render(request, template, context)


def _float(value: str | None, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise JudgmentError(ERR_BAD_FORM.format(detail=f"{name}={value!r}")) from exc


def _labels_from_form(post) -> list[LabelInput]:
    positions = sorted(
        {int(k.split("_")[1]) for k in post if k.startswith(("label_", "rank_", "coverage_")) and k.split("_")[1].isdigit()}
    )
    labels = []
    for pos in positions:
        time_s = _float(post.get(f"flaw_time_{pos}"), "flaw time")  # one time for the video (older form)
        rank = post.get(f"rank_{pos}") or None
        if rank is not None and not rank.isdigit():
            raise JudgmentError(ERR_BAD_FORM.format(detail=f"rank={rank!r}"))
        labels.append(
            LabelInput(
                position=pos,
                label=post.get(f"label_{pos}") or CandidateLabel.Label.NEUTRAL,
                rank=int(rank) if rank else None,
                playback_coverage=min(max(_float(post.get(f"coverage_{pos}"), "coverage") or 0.0, 0.0), 1.0),
                flaws=tuple(  # each tag's own time (flaw_time_<pos>_<slug>), else the video's
                    FlawInput(tag=slug, time_s=_float(post.get(f"flaw_time_{pos}_{slug}"), "flaw time") if
                              post.get(f"flaw_time_{pos}_{slug}") else time_s)
                    for slug in post.getlist(f"flaw_{pos}")
                ),
            )
        )
    return labels


@login_required
@require_POST
def annotate_submit(request: HttpRequest) -> HttpResponse:
    """Store the answer, then show the next group (htmx swaps it in; no full page reload)."""
    if denied := _require_annotator(request):
        return denied
    post = request.POST
    try:
        assignment_id = post.get("assignment", "")
        if not assignment_id.isdigit():
            raise JudgmentError(ERR_BAD_FORM.format(detail="assignment"))
        time_spent = post.get("time_spent_ms", "0")
        judgment_submit(
            annotator=request.user,
            assignment_id=int(assignment_id),
            outcome=post.get("outcome", "labelled"),
            labels=_labels_from_form(post),
            skip_reason=(post.get("skip_reason", "") + (": " + post["skip_note"] if post.get("skip_note") else "")),
            time_spent_ms=int(time_spent) if time_spent.isdigit() else 0,
        )
    except JudgmentError as exc:
        if request.htmx:
            response = render(request, "annotation/partials/error.html", {"error": exc.message}, status=exc.status)
            response["HX-Retarget"] = "#submit-error"
            response["HX-Reswap"] = "innerHTML"
            return response
        return render(request, "annotation/partials/error.html", {"error": exc.message}, status=exc.status)
    if not request.htmx:
        return HttpResponseRedirect(reverse("annotate"))
    try:
        context = _workbench_context(request)
    except AnnotatorPausedError as exc:
        response = _paused(request, exc)
        response.status_code = 200
        response["HX-Retarget"] = "body"
        return response
    return render(request, "annotation/partials/group.html", context)


@require_GET
def assignment_media(request: HttpRequest, token: str) -> HttpResponse:
    """A candidate's video or poster by blind, signed, expiring link; Range requests for local storage, a redirect
    to a presigned URL (``storage.object_url``) for S3."""
    try:
        assignment_id, position, kind, expires = assignment_media_unsign(token)
    except signing.BadSignature as exc:
        raise Http404("Invalid media link.") from exc
    if expires < time.time():
        raise Http404("This media link has expired.")
    cache_key = f"am:{token}"
    key = cache.get(cache_key)
    if key is None:
        key = media_key_for_token(assignment_id=assignment_id, position=position, kind=kind)
        if key is None:
            raise Http404("No such object.")
        cache.set(cache_key, key, 300)
    if storage.is_s3():
        response = HttpResponseRedirect(storage.object_url(key=key))
        response["Cache-Control"] = "private, max-age=300"
        return response
    if not default_storage.exists(key):
        raise Http404("No such object.")
    response = ranged_file_response(default_storage.path(key), request.headers.get("Range"))
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
def media_serve(request: HttpRequest, token: str) -> HttpResponse:
    """Local-storage media by signed, expiring token; supports Range (the S3 backend uses presigned URLs instead)."""
    try:
        key = storage.media_token_key(token)
    except signing.SignatureExpired as exc:
        raise Http404("This media link has expired.") from exc
    except signing.BadSignature as exc:
        raise Http404("Invalid media link.") from exc
    if storage.is_s3() or not default_storage.exists(key):
        raise Http404("No such object.")
    response = ranged_file_response(default_storage.path(key), request.headers.get("Range"))
    response["Cache-Control"] = "private, max-age=3600"
    return response


# -- quality control and review (reviewers, researchers) ---------------------------------------------------------------
@login_required
@require_GET
def qc(request: HttpRequest) -> HttpResponse:
    if denied := _require_reviewer(request):
        return denied
    rounds = list(Round.objects.order_by("-created_at").only("id", "name")[:50])
    selected = None
    if request.GET.get("round", "").isdigit():
        selected = Round.objects.filter(pk=int(request.GET["round"])).first()
    selected = selected or (rounds[0] if rounds else None)
    report = round_quality(round=selected) if selected else None
    context = {"rounds": rounds, "selected": selected, "report": report}
    if report:
        context["alpha_chart"] = charts.bar_chart(
            [(c["category"], c["alpha_ordinal"]) for c in report["categories"]], lo=-1.0, hi=1.0, title="Krippendorff's alpha (ordinal) per category"
        )
        context["bias_chart"] = charts.bar_chart(
            [(a["pseudonym"], a["position_bias"]) for a in report["annotators"][:30]], lo=0.0, hi=1.0, title="Position bias: first-shown wins"
        )
        context["gold_chart"] = charts.bar_chart(
            [(a["pseudonym"], a["gold_accuracy"]) for a in report["annotators"][:30]], lo=0.0, hi=1.0, title="Gold accuracy"
        )
    context["open_reviews"] = ReviewItem.objects.filter(status=ReviewItem.Status.OPEN).count()
    return render(request, "annotation/qc.html", context)


@login_required
@require_GET
def review_list(request: HttpRequest) -> HttpResponse:
    if denied := _require_reviewer(request):
        return denied
    items = list(
        ReviewItem.objects.filter(status=ReviewItem.Status.OPEN).select_related("group__prompt", "group__round").order_by("created_at")[:100]
    )
    return render(request, "annotation/review_list.html", {"items": items})


def _review_context(item: ReviewItem) -> dict:
    group: CandidateGroup = item.group
    candidates = list(group.candidates.order_by("id"))
    judgments = list(
        Judgment.objects.filter(group=group).select_related("annotator__annotator_profile").prefetch_related("labels__flaws__tag").order_by("id")
    )
    by_candidate = {c.pk: [] for c in candidates}
    for j in judgments:
        for lab in j.labels.all():
            by_candidate.setdefault(lab.candidate_id, []).append((j, lab))
    rows = [
        {
            "candidate": c,
            "video_url": storage.object_url(key=storage.key_from_uri(c.video_uri)) if c.video_uri else "",
            "votes": by_candidate.get(c.pk, []),
        }
        for c in candidates
    ]
    return {"item": item, "group": group, "rows": rows, "judgments": judgments}


@login_required
def review_detail(request: HttpRequest, pk: int) -> HttpResponse:
    if denied := _require_reviewer(request):
        return denied
    item = get_object_or_404(ReviewItem.objects.select_related("group__prompt", "group__round"), pk=pk)
    error = ""
    if request.method == "POST":
        preferred = [int(k.split("_")[1]) for k, v in request.POST.items() if k.startswith("decision_") and v == "preferred"]
        rejected = [int(k.split("_")[1]) for k, v in request.POST.items() if k.startswith("decision_") and v == "non_preferred"]
        try:
            review_item_resolve(review_item=item, reviewer=request.user, preferred=preferred, non_preferred=rejected,
                                note=request.POST.get("note", ""))
            return redirect("review-list")
        except ReviewError as exc:
            error = exc.message
    elif request.method != "GET":
        return HttpResponse(status=405)
    context = _review_context(item)
    context["error"] = error
    return render(request, "annotation/review_detail.html", context, status=400 if error else 200)
