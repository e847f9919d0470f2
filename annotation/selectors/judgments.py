"""Reads of judgments, pairs, prompts and review items for the API lists and the HTML pages (querysets built here,
never in a view)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from annotation import permissions
from annotation.models import CandidateGroup, Judgment, PreferencePair, Prompt, PromptSet, ReviewItem


def judgment_list(*, user, round_id: int | None = None, annotator_id: int | None = None) -> QuerySet[Judgment]:
    """Judgments with their labels and flaw tags: reviewers and researchers see all (optionally one annotator's or one
    round's), anyone else only their own, unfiltered (a round filter would tell an annotator which round, so which
    checkpoint, each group they judged came from)."""
    qs = Judgment.objects.prefetch_related("labels__flaws__tag")
    if not permissions.is_reviewer(user):
        return qs.filter(annotator=user)
    if annotator_id is not None:
        qs = qs.filter(annotator_id=annotator_id)
    if round_id is not None:
        qs = qs.filter(group__round_id=round_id)
    return qs


def judgments_today_count(*, annotator) -> int:
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return Judgment.objects.filter(annotator=annotator, created_at__gte=start).count()


def pair_list(*, round_id: int | None = None, min_agreement: float | None = None) -> QuerySet[PreferencePair]:
    from annotation.selectors.exports import SHOWN_PROMPT_TEXT

    qs = PreferencePair.objects.annotate(prompt_shown=SHOWN_PROMPT_TEXT)
    if round_id is not None:
        qs = qs.filter(round_id=round_id)
    if min_agreement is not None:
        qs = qs.filter(agreement__gte=min_agreement)
    return qs


def prompt_list(*, category: str | None = None, is_active: bool | None = None) -> QuerySet[Prompt]:
    qs = Prompt.objects.select_related("category", "prompt_set")
    if category:
        qs = qs.filter(category__slug=category)
    if is_active is not None:
        qs = qs.filter(is_active=is_active)
    return qs


def prompt_sets_with_guidelines(*, limit: int = 10) -> list[PromptSet]:
    return list(PromptSet.objects.exclude(guidelines_md="").order_by("name")[:limit])


def review_items_open(*, limit: int = 100) -> list[ReviewItem]:
    return list(ReviewItem.objects.filter(status=ReviewItem.Status.OPEN)
                .select_related("group__prompt", "group__round").order_by("created_at")[:limit])


def review_items_open_count() -> int:
    return ReviewItem.objects.filter(status=ReviewItem.Status.OPEN).count()


def review_item_judgments(*, group: CandidateGroup) -> list[Judgment]:
    return list(Judgment.objects.filter(group=group).select_related("annotator__annotator_profile")
                .prefetch_related("labels__flaws__tag").order_by("id"))
