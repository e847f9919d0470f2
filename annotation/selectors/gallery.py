"""The researcher's gallery: a round's candidates by prompt, checkpoint and status, and one prompt+seed across
checkpoints (the "did the model get better" view). Not blind: researchers see seeds and checkpoints. A fixed number
of queries per page whatever the size of the database."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, Q

from annotation import storage
from annotation.models import Candidate, CandidateGroup, Checkpoint, Round

PAGE_SIZE = 12


@dataclass
class GalleryVideo:
    candidate_id: int
    checkpoint_id: int
    checkpoint_name: str
    seed: int
    status: str
    video_url: str
    poster_url: str
    round_id: int
    round_name: str
    error: str = ""


@dataclass
class GalleryGroup:
    group_id: int
    prompt_id: int
    prompt_text: str
    status: str
    videos: list[GalleryVideo]


def _url(uri: str, user) -> str:
    return storage.object_url(key=storage.key_from_uri(uri), user=user) if uri else ""


def _video(c: Candidate, rnd: Round, user) -> GalleryVideo:
    ready = c.status == Candidate.Status.READY
    return GalleryVideo(
        candidate_id=c.pk, checkpoint_id=c.checkpoint_id, checkpoint_name=c.checkpoint.name, seed=c.seed,
        status=c.status, video_url=_url(c.video_uri, user) if ready else "",
        poster_url=_url(c.poster_uri, user) if ready else "",
        round_id=rnd.pk, round_name=rnd.name, error=c.error[:200],
    )


def gallery_rounds() -> list[Round]:
    return list(Round.objects.order_by("-id").only("id", "name", "kind", "status")[:200])


def gallery_checkpoints(*, round_id: int | None) -> list[Checkpoint]:
    qs = Checkpoint.objects.order_by("id")
    if round_id:
        qs = qs.filter(candidates__group__round_id=round_id).distinct()
    return list(qs.only("id", "name"))


def gallery_page(*, round_id: int, user=None, prompt_query: str = "", checkpoint_id: int | None = None, status: str = "",
                 page: int = 1) -> tuple[list[GalleryGroup], int]:
    """The round's groups (newest prompt first) with their candidates filtered by checkpoint and status; groups that
    keep no candidate after the filter are left out. Returns (groups of this page, number of matching groups)."""
    cand_filter = Q()
    if checkpoint_id:
        cand_filter &= Q(checkpoint_id=checkpoint_id)
    if status:
        cand_filter &= Q(status=status)
    groups = CandidateGroup.objects.filter(round_id=round_id).select_related("prompt", "round")
    if prompt_query:
        groups = groups.filter(Q(prompt__text__icontains=prompt_query) | Q(prompt_text__icontains=prompt_query))
    if cand_filter:
        groups = groups.filter(pk__in=Candidate.objects.filter(cand_filter, group__round_id=round_id).values("group_id"))
    total = groups.count()
    start = (max(page, 1) - 1) * PAGE_SIZE
    candidates = Candidate.objects.filter(cand_filter).select_related("checkpoint").order_by("checkpoint_id", "seed")
    rows = groups.order_by("id").prefetch_related(Prefetch("candidates", queryset=candidates))[start:start + PAGE_SIZE]
    out = [
        GalleryGroup(group_id=g.pk, prompt_id=g.prompt_id, prompt_text=g.prompt_text or g.prompt.text, status=g.status,
                     videos=[_video(c, g.round, user) for c in g.candidates.all()])
        for g in rows
    ]
    return out, total


def seed_across_checkpoints(*, prompt_id: int, seed: int, user=None) -> tuple[str, list[GalleryVideo]]:
    """Every ready video of one prompt and one seed, one per checkpoint (its newest), in checkpoint order: the same
    noise through each model, side by side. Returns (prompt text, videos)."""
    cands = (
        Candidate.objects.filter(group__prompt_id=prompt_id, seed=seed, status=Candidate.Status.READY)
        .select_related("checkpoint", "group__round", "group__prompt")
        .order_by("checkpoint_id", "-id")
    )
    seen, videos, text = set(), [], ""
    for c in cands:
        text = text or c.group.prompt_text or c.group.prompt.text
        if c.checkpoint_id in seen:
            continue
        seen.add(c.checkpoint_id)
        videos.append(_video(c, c.group.round, user))
    return text, videos
