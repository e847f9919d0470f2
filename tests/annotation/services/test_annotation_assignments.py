from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from annotation.models import Assignment, Candidate, CandidateGroup, Round
from annotation.services.assignments import (
    AnnotatorPausedError,
    assignment_reserve_next,
    assignments_expire,
    assignments_for_annotator,
)
from annotation.services.quality import annotator_pause
from tests.annotation.factories import RoundFactory, annotator, group_with_candidates

pytestmark = pytest.mark.django_db


def test_reserves_k_distinct_annotators_then_stops():
    group = group_with_candidates(k=4)  # k = 2 annotators
    a, b, c = annotator(), annotator(), annotator()
    first = assignment_reserve_next(annotator=a)
    second = assignment_reserve_next(annotator=b)
    assert first.group_id == second.group_id == group.pk
    assert assignment_reserve_next(annotator=c) is None  # both slots taken
    assert assignment_reserve_next(annotator=a) is None  # never the same group twice
    group.refresh_from_db()
    assert group.active_reservations == 2


def test_shown_order_is_a_stored_permutation_of_ready_candidates():
    group = group_with_candidates(k=4)
    orders = set()
    for _ in range(12):
        group.target_judgments = 20
        group.save()
        assignment = assignment_reserve_next(annotator=annotator())
        assert sorted(assignment.shown_order) == sorted(group.candidates.values_list("id", flat=True))
        orders.add(tuple(assignment.shown_order))
    assert len(orders) > 1  # shuffled per assignment


def test_only_ready_groups_and_ready_unflagged_candidates_are_served():
    rnd = RoundFactory(exclude_flagged=True)
    generating = group_with_candidates(k=2, round=rnd, status=CandidateGroup.Status.GENERATING)
    flagged = group_with_candidates(k=2, round=rnd)
    cand = flagged.candidates.first()
    cand.screening_flags = ["black_frames"]
    cand.save()
    partial = group_with_candidates(k=3, round=rnd)
    failed = partial.candidates.first()
    failed.status, failed.video_uri = Candidate.Status.FAILED, ""
    failed.save()
    user = annotator()
    assignment = assignment_reserve_next(annotator=user)
    assert assignment.group_id == partial.pk  # the flagged group has one servable candidate left, skipped
    assert failed.pk not in assignment.shown_order and len(assignment.shown_order) == 2
    assert assignment_reserve_next(annotator=user) is None
    assert not Assignment.objects.filter(group__in=[generating, flagged]).exists()


def test_cancelled_round_is_not_served():
    group_with_candidates(k=2, round=RoundFactory(status=Round.Status.CANCELLED))
    assert assignment_reserve_next(annotator=annotator()) is None


def test_lookahead_holds_the_next_group_and_renews_the_current_ttl():
    g1, g2, g3 = (group_with_candidates(k=2) for _ in range(3))
    user = annotator()
    live = assignments_for_annotator(annotator=user, lookahead=1)
    assert [a.group_id for a in live] == [g1.pk, g2.pk]
    again = assignments_for_annotator(annotator=user, lookahead=1)
    assert [a.pk for a in again] == [a.pk for a in live]  # same reservations, nothing new
    assert g3.assignments.count() == 0


def test_expired_reservations_return_to_the_queue():
    group = group_with_candidates(k=2)
    a = annotator()
    assignment = assignment_reserve_next(annotator=a)
    Assignment.objects.filter(pk=assignment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert assignments_expire() == 1
    group.refresh_from_db()
    assert group.active_reservations == 0
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.Status.EXPIRED
    b, c = annotator(), annotator()
    assert assignment_reserve_next(annotator=b).group_id == group.pk
    assert assignment_reserve_next(annotator=c).group_id == group.pk
    assert assignment_reserve_next(annotator=a) is None  # still never twice to the same annotator


def test_database_forbids_the_same_group_twice():
    group = group_with_candidates(k=2)
    user = annotator()
    Assignment.objects.create(group=group, annotator=user, shown_order=[1], expires_at=timezone.now())
    with pytest.raises(IntegrityError):
        Assignment.objects.create(group=group, annotator=user, shown_order=[1], expires_at=timezone.now())


def test_gold_groups_mixed_in_at_the_gold_rate():
    rnd = RoundFactory(gold_rate=1.0)
    regular = group_with_candidates(k=2, round=rnd)
    gold = group_with_candidates(k=2, round=rnd, is_gold=True)
    user = annotator()
    assert assignment_reserve_next(annotator=user).group_id == gold.pk
    assert assignment_reserve_next(annotator=user).group_id == regular.pk  # gold exhausted for this annotator
    rnd0 = RoundFactory(gold_rate=0.0)
    gold0 = group_with_candidates(k=2, round=rnd0, is_gold=True)
    group_with_candidates(k=2, round=rnd0)
    other = annotator()
    served = {assignment_reserve_next(annotator=other).group_id for _ in range(3)}
    assert gold0.pk not in served  # gold rate 0: never mixed in


def test_paused_annotator_gets_no_group():
    group_with_candidates(k=2)
    user = annotator()
    annotator_pause(annotator=user, reason="test")
    with pytest.raises(AnnotatorPausedError, match="paused"):
        assignments_for_annotator(annotator=user)
