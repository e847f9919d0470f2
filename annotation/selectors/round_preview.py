"""What a round form previews before launch: how many prompts match, how many videos that makes, how long the
workers took for recent videos, and how many annotators exist (the default k never exceeds them)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Max, Min

from annotation.models import Candidate

RECENT = 50  # finished candidates the throughput is measured on


@dataclass(frozen=True)
class RoundPreview:
    prompts: int
    seeds: int
    videos: int
    per_minute: float | None  # recent throughput, all workers together
    eta_s: float | None


def recent_throughput_per_minute() -> float | None:
    """Videos per minute over the last RECENT finished candidates (first start to last finish: every worker counts),
    None without enough history."""
    ids = list(Candidate.objects.filter(status=Candidate.Status.READY, started_at__isnull=False,
                                        finished_at__isnull=False).order_by("-finished_at")
               .values_list("id", flat=True)[:RECENT])
    if len(ids) < 2:
        return None
    span = Candidate.objects.filter(id__in=ids).aggregate(a=Min("started_at"), b=Max("finished_at"))
    seconds = (span["b"] - span["a"]).total_seconds()
    return len(ids) / seconds * 60 if seconds > 0 else None


def round_preview(*, prompt_count: int, seeds_per_prompt: int) -> RoundPreview:
    videos = prompt_count * seeds_per_prompt
    rate = recent_throughput_per_minute()
    return RoundPreview(prompts=prompt_count, seeds=seeds_per_prompt, videos=videos, per_minute=rate,
                        eta_s=(videos / rate * 60) if rate else None)


def annotators_available() -> int:
    """Accounts with the annotator role that are active and not paused."""
    return (get_user_model().objects.filter(is_active=True, groups__name="annotator")
            .exclude(annotator_profile__is_paused=True).distinct().count())


def default_annotators_per_group(preferred: int = 3) -> int:
    return max(1, min(preferred, annotators_available()))
