"""Small teams never deadlock (issue 18 item 12): a split that asks for another annotator goes to review when every
active annotator already judged it, or after the round's wait when nobody takes it; the cap is a round setting."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from annotation.models import CandidateGroup, ReviewItem
from annotation.services.assignments import assignments_for_annotator
from annotation.services.judgments import LabelInput, judgment_submit
from annotation.services.stalled import groups_stalled_to_review
from tests.annotation.factories import RoundFactory, annotator, group_with_candidates

pytestmark = pytest.mark.django_db


def judge(user, preferred: int) -> None:
    """Prefer candidate ``preferred`` (by id, whatever position it is shown at) over the other."""
    (assignment, *_) = assignments_for_annotator(annotator=user)
    labels = [LabelInput(position=pos, label="preferred" if cid == preferred else "non_preferred", playback_coverage=1.0)
              for pos, cid in enumerate(assignment.shown_order)]
    judgment_submit(annotator=user, assignment_id=assignment.pk, outcome="labelled", labels=labels, time_spent_ms=1000)


def split_group(team: int, **round_kwargs):
    rnd = RoundFactory(annotators_per_group=2, max_annotators_per_group=4, **round_kwargs)
    group = group_with_candidates(k=2, round=rnd)
    users = [annotator() for _ in range(team)]
    a, b = group.candidates.order_by("id").values_list("id", flat=True)
    judge(users[0], preferred=a)
    judge(users[1], preferred=b)
    group.refresh_from_db()
    assert group.status == CandidateGroup.Status.READY and group.target_judgments == 3  # asks for one more
    return group, users


def test_a_split_no_one_else_can_take_goes_to_review():
    group, _ = split_group(team=2)
    assert groups_stalled_to_review() == 1
    group.refresh_from_db()
    assert group.status == CandidateGroup.Status.REVIEW
    item = ReviewItem.objects.get(group=group)
    assert item.status == ReviewItem.Status.OPEN and "all 2 active annotators judged it" in item.reason
    assert groups_stalled_to_review() == 0  # idempotent


def test_a_split_waits_for_another_annotator_then_goes_to_review():
    group, users = split_group(team=3, config={"review_after_s": 3600})
    assert groups_stalled_to_review() == 0  # a third annotator exists: wait for them
    assert groups_stalled_to_review(now=timezone.now() + dt.timedelta(hours=2)) == 1
    group.refresh_from_db()
    assert group.status == CandidateGroup.Status.REVIEW
    assert "nobody took the extra judgment for 1 h" in ReviewItem.objects.get(group=group).reason


def test_a_reserved_split_is_not_moved():
    group, users = split_group(team=3, config={"review_after_s": 0})
    assignments_for_annotator(annotator=users[2])  # the third annotator holds it now
    assert groups_stalled_to_review(now=timezone.now() + dt.timedelta(days=1)) == 0
    group.refresh_from_db()
    assert group.status == CandidateGroup.Status.READY
