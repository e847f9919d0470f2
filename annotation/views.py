"""HTML views (function views; htmx requests get partials). One permission style (``permissions.role_required``)
and one error path (``errors.html_errors`` / ``errors.error_response``): no exception mapping by hand."""

from __future__ import annotations

import time

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe

from annotation import charts, permissions, storage
from annotation.agreement import ASPECTS
from annotation.errors import ApplicationError, error_messages, html_errors, is_decimal, is_int
from annotation.media import ERR_LINK_NOT_YOURS, ERR_NO_OBJECT, MediaLinkError, media_target, ranged_file_response
from annotation.models import CandidateGroup, CandidateLabel, ReviewItem, Round
from annotation.permissions import ERR_NOT_ANNOTATOR, annotator_required, reviewer_required
from annotation.selectors.advice import latest_round_with_judgments
from annotation.selectors.groups import (
    flaw_tags_active,
    group_page_for_assignments,
    guidelines_html,
    media_key_for_token,
)
from annotation.selectors.judgments import (
    judgments_today_count,
    prompt_sets_with_guidelines,
    review_item_judgments,
    review_items_open,
    review_items_open_count,
)
from annotation.selectors.stats import annotator_stats, reward_human_agreement, round_quality
from annotation.selectors.workbench import groups_generating_count
from annotation.services.assignments import AnnotatorPausedError, assignments_for_annotator
from annotation.services.judgments import FlawInput, JudgmentError, LabelInput, judgment_submit
from annotation.services.reviews import review_item_resolve

__all__ = ["ERR_NOT_ANNOTATOR"]
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
        context["stats"] = annotator_stats(annotator_id=user.pk, with_peers=False, own=not permissions.is_reviewer(user))
        context["guidelines"] = [(ps.name, guidelines_html(ps.guidelines_md)) for ps in prompt_sets_with_guidelines()]
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
        "done_today": judgments_today_count(annotator=request.user),
    }


def _paused(request: HttpRequest, exc: AnnotatorPausedError, *, status: int = 403) -> HttpResponse:
    """A paused annotator sees the paused page instead of the workbench (its own page, not an error box)."""
    return render(request, "annotation/paused.html", {"message": exc.message}, status=status)


@annotator_required
@require_GET
def annotate(request: HttpRequest) -> HttpResponse:
    """The workbench: the annotator's current group (full page, or the group partial for htmx)."""
    try:
        context = _workbench_context(request)
    except AnnotatorPausedError as exc:
        return _paused(request, exc)
    template = "annotation/partials/group.html" if request.htmx else "annotation/annotate.html"
    return render(request, template, context)


def _float(value: str | None, name: str) -> float | None:
    if value in (None, ""):
        return None
    if not is_decimal(value):  # float() would also read "1_0" as 10 and "١٢" as 12
        raise JudgmentError(ERR_BAD_FORM.format(detail=f"{name}={value[:20]!r}"))
    return float(value)


def _time_spent(value: str) -> int:
    if not is_int(value or "0"):
        raise JudgmentError(ERR_BAD_FORM.format(detail=f"time_spent_ms={value[:20]!r}"))
    return int(value or "0")


MAX_FORM_SEGMENTS = 1000


def _segments_from_form(post, pos: int) -> tuple[str, ...]:
    """``segment_<pos>_<k>`` fields -> one label per segment from the first (missing ones neutral)."""
    prefix = f"segment_{pos}_"
    given = {}
    for key in post:
        if key.startswith(prefix):
            k = key[len(prefix):]
            if not (k.isascii() and k.isdigit() and str(int(k)) == k and int(k) < MAX_FORM_SEGMENTS):
                raise JudgmentError(ERR_BAD_FORM.format(detail=key[:40]))
            given[int(k)] = post[key]
    return tuple(given.get(k, CandidateLabel.Label.NEUTRAL) for k in range(max(given) + 1)) if given else ()


def _labels_from_form(post) -> list[LabelInput]:
    positions = sorted(
        {int(k.split("_")[1]) for k in post if k.startswith(("label_", "rank_", "coverage_")) and is_int(k.split("_")[1])}
    )
    strays = sorted(k for k in post if k.startswith("segment_") and k.split("_")[1] not in {str(p) for p in positions})
    if strays:  # a segment of a video the form does not name
        raise JudgmentError(ERR_BAD_FORM.format(detail=strays[0][:40]))
    labels = []
    for pos in positions:
        time_s = _float(post.get(f"flaw_time_{pos}"), "flaw time")  # one time for the video (older form)
        rank = post.get(f"rank_{pos}") or None
        if rank is not None and not is_int(rank):
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
                aspects={a: post[f"aspect_{a}_{pos}"] for a in ASPECTS if post.get(f"aspect_{a}_{pos}")},
                segments=_segments_from_form(post, pos),
            )
        )
    return labels


@annotator_required
@require_POST
@html_errors(retarget="#submit-error")
def annotate_submit(request: HttpRequest) -> HttpResponse:
    """Store the answer, then show the next group (htmx swaps it in; no full page reload)."""
    post = request.POST
    handle = post.get("assignment", "")  # the reservation's public handle (never its database id)
    if not handle or len(handle) > 64:
        raise JudgmentError(ERR_BAD_FORM.format(detail="assignment"))
    time_spent = post.get("time_spent_ms", "0")
    judgment_submit(
        annotator=request.user,
        public_id=handle,
        outcome=post.get("outcome", "labelled"),
        labels=_labels_from_form(post),
        skip_reason=(post.get("skip_reason", "") + (": " + post["skip_note"] if post.get("skip_note") else "")),
        time_spent_ms=_time_spent(time_spent),
    )
    if not request.htmx:
        return HttpResponseRedirect(reverse("annotate"))
    try:
        context = _workbench_context(request)
    except AnnotatorPausedError as exc:  # paused by this very judgment (gold check): the whole page changes
        response = _paused(request, exc, status=200)
        response["HX-Retarget"] = "body"
        return response
    return render(request, "annotation/partials/group.html", context)


def _media_user(request: HttpRequest):
    """The signed-in user, or the API token's (a script downloading an export, or an API annotator client playing its
    group's videos, with ``Authorization: Token``)."""
    if request.user.is_authenticated:
        return request.user
    if not request.headers.get("Authorization"):
        return None
    from rest_framework.exceptions import AuthenticationFailed

    from annotation.authentication import TokenAuthentication

    try:
        found = TokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return None
    return found[0] if found else None


@require_safe  # GET and HEAD (players probe with HEAD)
@html_errors
def media(request: HttpRequest, token: str) -> HttpResponse:
    """Every object a browser fetches, by signed expiring link (``annotation.media``): an object key, or a blind
    (reservation, shown position, kind) link of the annotator page. Local storage answers with HTTP ranges; S3 with a
    redirect to a presigned URL. A bad, expired or dangling link is a 404."""
    target = media_target(token)
    if target[0] == "k":
        key, user_id = target[1], target[2]
        # a page's link is bound to the reviewer or researcher it was made for (a copied link is nobody else's), while
        # they hold the role; None: a bearer link of an export's "links" media mode
        if user_id is not None:
            user = _media_user(request)
            if user is None or user.pk != user_id or not permissions.is_reviewer(user):
                raise MediaLinkError(ERR_LINK_NOT_YOURS)
    else:
        cache_key = f"am:{token}"
        grant = cache.get(cache_key)
        if grant is None:
            grant = media_key_for_token(handle=target[1], position=target[2], kind=target[3])
            if grant is None:
                raise MediaLinkError(ERR_NO_OBJECT)
            cache.set(cache_key, grant, 30)  # short: a renewed reservation is read again soon
        key, annotator_id, live_until = grant
        # bound to the annotator who holds the reservation, while it lives (and a short grace after)
        user = _media_user(request)  # the page's session, or the API client's token (``/api/groups/next/`` links)
        if user is None or user.pk != annotator_id or time.time() > live_until:
            raise MediaLinkError(ERR_LINK_NOT_YOURS)
    if storage.is_s3():
        response = HttpResponseRedirect(storage.object_url(key=key))
        response["Cache-Control"] = "private, max-age=300"
        return response
    if not default_storage.exists(key):
        raise MediaLinkError(ERR_NO_OBJECT)
    response = ranged_file_response(default_storage.path(key), request.headers.get("Range"))
    response["Cache-Control"] = "private, max-age=3600"
    return response


# -- quality control and review (reviewers, researchers) ---------------------------------------------------------------
def _qc_charts(report: dict) -> dict:
    annotators = report["annotators"][:30]
    return {
        "alpha_chart": charts.bar_chart(title="Krippendorff's alpha (ordinal) per category", value_label="alpha",
                                        items=[(c["category"], c["alpha_ordinal"]) for c in report["categories"]],
                                        lo=-1.0, hi=1.0),
        "bias_chart": charts.bar_chart(title="Position bias: first-shown wins", value_label="first-shown win rate",
                                       items=[(a["pseudonym"], a["position_bias"]) for a in annotators]),
        "gold_chart": charts.bar_chart(title="Gold accuracy", value_label="gold accuracy",
                                       items=[(a["pseudonym"], a["gold_accuracy"]) for a in annotators]),
    }


ERR_QC_ROUND = "Round must be a round's number, not {value!r}."
ERR_QC_NO_ROUND = "There is no round {value}."


@reviewer_required
@require_GET
@html_errors
def qc(request: HttpRequest) -> HttpResponse:
    rounds = list(Round.objects.order_by("-created_at").only("id", "name")[:50])
    selected = None
    asked = request.GET.get("round", "").strip()
    if asked:  # a bad or unknown round is a 4xx with a message, never silently another round
        if not is_int(asked):
            raise ApplicationError(ERR_QC_ROUND.format(value=asked[:40]))
        selected = Round.objects.filter(pk=int(asked)).first()
        if selected is None:
            raise ApplicationError(ERR_QC_NO_ROUND.format(value=int(asked)), status=404)
    selected = selected or latest_round_with_judgments() or (rounds[0] if rounds else None)
    report = round_quality(round=selected) if selected else None
    context = {"rounds": rounds, "selected": selected, "report": report, "open_reviews": review_items_open_count(),
               "reward_agreement": reward_human_agreement(round=selected) if selected else None}
    if report:
        context.update(_qc_charts(report))
        # pseudonym -> account: reviewers and researchers only (this page is theirs)
        from annotation.selectors.accounts import account_names

        names = account_names(user_ids=[a["annotator_id"] for a in report["annotators"]])
        for a in report["annotators"]:
            a["account"] = names.get(a["annotator_id"], "")
    return render(request, "annotation/qc.html", context)


@reviewer_required
@require_GET
def review_list(request: HttpRequest) -> HttpResponse:
    return render(request, "annotation/review_list.html", {"items": review_items_open()})


def _review_context(item: ReviewItem, user) -> dict:
    group: CandidateGroup = item.group
    candidates = list(group.candidates.order_by("id"))
    judgments = review_item_judgments(group=group)
    by_candidate = {c.pk: [] for c in candidates}
    for j in judgments:
        for lab in j.labels.all():
            by_candidate.setdefault(lab.candidate_id, []).append((j, lab))
    rows = [
        {
            "candidate": c,
            "video_url": storage.object_url(key=storage.key_from_uri(c.video_uri), user=user) if c.video_uri else "",
            "votes": by_candidate.get(c.pk, []),
        }
        for c in candidates
    ]
    return {"item": item, "group": group, "rows": rows, "judgments": judgments}


def _decisions(post, value: str) -> list[int]:
    return [int(k.split("_")[1]) for k, v in post.items() if k.startswith("decision_") and is_int(k[9:]) and v == value]


@reviewer_required
@require_http_methods(["GET", "POST"])
def review_detail(request: HttpRequest, pk: int) -> HttpResponse:
    item = get_object_or_404(ReviewItem.objects.select_related("group__prompt", "group__round"), pk=pk)
    context = _review_context(item, request.user)
    if request.method == "POST":
        try:
            review_item_resolve(review_item=item, reviewer=request.user, preferred=_decisions(request.POST, "preferred"),
                                non_preferred=_decisions(request.POST, "non_preferred"), note=request.POST.get("note", ""))
        except ApplicationError as exc:  # the form again, with the message above it
            return render(request, "annotation/review_detail.html", {**context, "error": " ".join(error_messages(exc))},
                          status=exc.status)
        return redirect("review-list")
    return render(request, "annotation/review_detail.html", context)
