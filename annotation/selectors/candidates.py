"""Reads about candidates and a round's generation progress."""

from __future__ import annotations

from django.db.models import Case, Count, IntegerField, QuerySet, Sum, When

from annotation.models import Candidate, Round


def candidate_list_for_round(*, round_id: int, status: str | None = None) -> QuerySet[Candidate]:
    qs = (
        Candidate.objects.filter(group__round_id=round_id)
        .select_related("group", "group__prompt", "checkpoint")
        .order_by("group_id", "checkpoint_id", "seed")
    )
    return qs.filter(status=status) if status else qs


def round_generation_progress(*, round_id: int) -> dict:
    """The round's progress as the sum over its candidates: counts per status and denoising steps done / total.

    A finished (ready/encoded) candidate counts all its steps; a queued one none; a running one its current step;
    failed and cancelled ones drop out of the total. ``fraction`` is in [0, 1]."""
    round = Round.objects.only("id", "num_steps", "status").get(id=round_id)
    qs = Candidate.objects.filter(group__round_id=round_id)
    counts = {row["status"]: row["n"] for row in qs.values("status").annotate(n=Count("id"))}
    steps_expr = Case(
        When(status__in=[Candidate.Status.READY, Candidate.Status.ENCODED], then=round.num_steps),
        When(status=Candidate.Status.RUNNING, then="progress_step"),
        default=0,
        output_field=IntegerField(),
    )
    done = qs.aggregate(s=Sum(steps_expr))["s"] or 0
    active = sum(n for s, n in counts.items() if s not in (Candidate.Status.FAILED, Candidate.Status.CANCELLED))
    total_steps = active * round.num_steps
    total = sum(counts.values())
    return {
        "round_id": round_id,
        "round_status": round.status,
        "total": total,
        "counts": {s: counts.get(s, 0) for s in Candidate.Status.values},
        "steps_done": int(done),
        "steps_total": int(total_steps),
        "fraction": (done / total_steps) if total_steps else (1.0 if total and not active else 0.0),
        "flagged": qs.filter(status=Candidate.Status.READY).exclude(screening_flags=[]).count(),
    }
