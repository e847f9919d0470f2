"""The review queue: a reviewer decides a group the annotators disagreed on."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from annotation.agreement import aggregate
from annotation.errors import ApplicationError
from annotation.models import CandidateGroup, PreferencePair, ReviewItem
from annotation.services.pairs import group_judgment_rows

ERR_REVIEW_RESOLVED = "This review item is already resolved."
ERR_REVIEW_CANDIDATE = "Candidate {value} is not part of this group."
ERR_REVIEW_OVERLAP = "A candidate cannot be both preferred and non-preferred."


class ReviewError(ApplicationError):
    """A refused review decision (400)."""


@transaction.atomic
def review_item_resolve(*, review_item: ReviewItem, reviewer, preferred: list[int], non_preferred: list[int], note: str = "") -> list[PreferencePair]:
    """Replace the group's pairs by the reviewer's decision (preferred x non-preferred, source=reviewer, weight 1;
    agreement = share of annotators who implied the pair). Empty lists mean "no usable pair"."""
    item = ReviewItem.objects.select_for_update().select_related("group__round").get(pk=review_item.pk)
    if item.status == ReviewItem.Status.RESOLVED:
        raise ReviewError(ERR_REVIEW_RESOLVED)
    group = item.group
    ids = set(group.candidates.values_list("id", flat=True))
    for cid in [*preferred, *non_preferred]:
        if cid not in ids:
            raise ReviewError(ERR_REVIEW_CANDIDATE.format(value=cid))
    if set(preferred) & set(non_preferred):
        raise ReviewError(ERR_REVIEW_OVERLAP)
    tallies = aggregate(judgments=group_judgment_rows(group=group), min_majority=0.0)
    votes = {(p.chosen, p.rejected): (p.votes_for, p.votes_against) for p in tallies.pairs}
    n = tallies.n_annotators
    PreferencePair.objects.filter(group=group).delete()
    pairs = []
    for w in preferred:
        for lo in non_preferred:
            f, a = votes.get((w, lo)) or tuple(reversed(votes.get((lo, w), (0, 0))))
            pairs.append(
                PreferencePair(round_id=group.round_id, group=group, chosen_id=w, rejected_id=lo, weight=1.0,
                               agreement=(f / n if n else 0.0), votes_for=f, votes_against=a, n_annotators=n,
                               source=PreferencePair.Source.REVIEWER)
            )
    pairs = PreferencePair.objects.bulk_create(pairs)
    item.status, item.reviewer, item.resolved_at = ReviewItem.Status.RESOLVED, reviewer, timezone.now()
    if note:
        item.reason = f"{item.reason}\nReviewer: {note}".strip()
    item.save(update_fields=["status", "reviewer", "resolved_at", "reason", "updated_at"])
    CandidateGroup.objects.filter(pk=group.pk).update(status=CandidateGroup.Status.DONE)
    return pairs
