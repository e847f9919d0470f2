"""Small teams never deadlock: a split group that asked for one more annotator (``_group_advance`` raises its target
up to ``Round.max_annotators_per_group``) goes to review when no other annotator can take it (every active annotator
already judged it) or after a wait (``Round.config["review_after_s"]``, default ``REVIEW_AFTER_S``) without anyone
taking it. Idempotent; run every minute by celery beat (``annotation.tasks.groups_stalled_to_review``)."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from annotation.models import CandidateGroup, Judgment, ReviewItem

REVIEW_AFTER_S = 6 * 3600
REASON_NO_ANNOTATOR = ("Annotators disagree, and no other annotator can take it: all {n} active annotators judged it "
                       "(the round asked for up to {cap}).")
REASON_WAITED = "Annotators disagree, and nobody took the extra judgment for {hours:g} h."


def _active_annotator_ids() -> set[int]:
    return set(get_user_model().objects.filter(is_active=True, groups__name="annotator")
               .exclude(annotator_profile__is_paused=True).values_list("id", flat=True))


@transaction.atomic
def groups_stalled_to_review(*, now: dt.datetime | None = None) -> int:
    """Move stalled split groups to review; returns how many moved."""
    now = now or timezone.now()
    waiting = list(
        CandidateGroup.objects.select_for_update(skip_locked=True, of=("self",)).select_related("round")
        .filter(status=CandidateGroup.Status.READY, is_gold=False, active_reservations=0,
                judgments_count__lt=F("target_judgments"), judgments_count__gte=F("round__annotators_per_group"))
    )
    if not waiting:
        return 0
    last_judged = dict(Judgment.objects.filter(group__in=waiting).values("group_id").annotate(last=Max("created_at"))
                       .values_list("group_id", "last"))
    annotators = _active_annotator_ids()
    judged: dict[int, set[int]] = {}
    for group_id, annotator_id in Judgment.objects.filter(group__in=waiting).values_list("group_id", "annotator_id"):
        judged.setdefault(group_id, set()).add(annotator_id)
    moved = 0
    for group in waiting:
        left = annotators - judged.get(group.pk, set())
        wait_s = float((group.round.config or {}).get("review_after_s", REVIEW_AFTER_S))
        if not left:
            reason = REASON_NO_ANNOTATOR.format(n=len(annotators), cap=group.round.max_annotators_per_group)
        elif group.pk in last_judged and (now - last_judged[group.pk]).total_seconds() >= wait_s:
            reason = REASON_WAITED.format(hours=round(wait_s / 3600, 2))
        else:
            continue
        CandidateGroup.objects.filter(pk=group.pk).update(status=CandidateGroup.Status.REVIEW)
        ReviewItem.objects.update_or_create(group=group, defaults={"status": ReviewItem.Status.OPEN, "reason": reason})
        moved += 1
    return moved
