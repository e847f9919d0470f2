"""The researcher's gallery: browse and play a round's candidates (by prompt, checkpoint, status) with the
synchronized player, and one prompt+seed side by side across checkpoints. Reads through ``selectors.gallery``."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotation.errors import ApplicationError, html_errors
from annotation.models import Candidate, Round
from annotation.permissions import researcher_required
from annotation.selectors.gallery import (
    PAGE_SIZE,
    gallery_checkpoints,
    gallery_page,
    gallery_rounds,
    seed_across_checkpoints,
)

ERR_NOT_A_NUMBER = "{name} must be a whole number (got {value!r})."
ERR_NO_ROUND = "There is no round {value}."


def _int(request: HttpRequest, name: str, label: str) -> int | None:
    value = request.GET.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ApplicationError(ERR_NOT_A_NUMBER.format(name=label, value=value))
    return int(value)


@researcher_required
@require_GET
@html_errors
def gallery(request: HttpRequest) -> HttpResponse:
    rounds = gallery_rounds()
    round_id = _int(request, "round", "Round")
    if round_id is None and rounds:
        round_id = rounds[0].pk
    if round_id is not None and not Round.objects.filter(pk=round_id).exists():
        raise ApplicationError(ERR_NO_ROUND.format(value=round_id), status=404)
    checkpoint_id = _int(request, "checkpoint", "Checkpoint")
    status = request.GET.get("status", "")
    if status and status not in Candidate.Status.values:
        status = ""
    page = _int(request, "page", "Page") or 1
    query = request.GET.get("q", "").strip()[:200]
    groups, total = ([], 0)
    if round_id is not None:
        groups, total = gallery_page(round_id=round_id, user=request.user, prompt_query=query, checkpoint_id=checkpoint_id,
                                     status=status, page=page)
    pages = max(1, -(-total // PAGE_SIZE))
    return render(request, "research/gallery.html", {
        "rounds": rounds, "round_id": round_id, "checkpoints": gallery_checkpoints(round_id=round_id),
        "checkpoint_id": checkpoint_id, "statuses": Candidate.Status.choices, "status": status, "q": query,
        "groups": groups, "total": total, "page": page, "pages": pages,
        "prev_page": page - 1 if page > 1 else None, "next_page": page + 1 if page < pages else None,
    })


@researcher_required
@require_GET
@html_errors
def gallery_compare(request: HttpRequest) -> HttpResponse:
    prompt_id, seed = _int(request, "prompt", "Prompt"), _int(request, "seed", "Seed")
    if prompt_id is None or seed is None:
        raise ApplicationError("Choose a prompt and a seed (open this page from a video of the gallery).")
    text, videos = seed_across_checkpoints(prompt_id=prompt_id, seed=seed, user=request.user)
    return render(request, "research/gallery_compare.html",
                  {"prompt_id": prompt_id, "seed": seed, "prompt_text": text, "videos": videos})
