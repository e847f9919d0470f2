from dataclasses import replace
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import (
    AnnotatorProfile,
    Assignment,
    CandidateGroup,
    CandidateLabel,
    FlawMark,
    Judgment,
    PreferencePair,
    ReviewItem,
)
from annotation.services import judgments as J
from annotation.services.assignments import assignment_reserve_next
from annotation.services.judgments import FlawInput, JudgmentError, LabelInput, judgment_submit
from tests.annotation.factories import RoundFactory, annotator, group_with_candidates
from tests.annotation.helpers import by_candidate, by_position

pytestmark = pytest.mark.django_db


def reserve(k=4, **round_kwargs):
    round_kwargs = {"annotators_per_group": 1, "max_annotators_per_group": 1, **round_kwargs}
    group = group_with_candidates(k=k, round=RoundFactory(**round_kwargs))
    user = annotator()
    return user, assignment_reserve_next(annotator=user), group


def nothing_stored():
    return not (Judgment.objects.exists() or CandidateLabel.objects.exists() or FlawMark.objects.exists()
                or PreferencePair.objects.exists())


def test_labels_store_judgment_labels_flaws_and_pairs():
    user, a, group = reserve()
    labels = by_position(a, {0: "preferred", 1: "non_preferred", 2: "non_preferred"},
                         flaws={1: [FlawInput("flicker", 0.4), FlawInput("morphing")]})
    judgment, created = judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels, time_spent_ms=5300)
    assert created and judgment.time_spent_ms == 5300
    rows = {lab.shown_position: lab for lab in judgment.labels.all()}
    assert [rows[p].candidate_id for p in range(4)] == a.shown_order
    assert rows[1].flaws.count() == 2 and rows[1].flaws.get(tag__slug="flicker").time_s == 0.4
    pairs = {(p.chosen_id, p.rejected_id) for p in PreferencePair.objects.all()}
    assert pairs == {(a.shown_order[0], a.shown_order[1]), (a.shown_order[0], a.shown_order[2])}
    a.refresh_from_db()
    group.refresh_from_db()
    assert a.status == Assignment.Status.SUBMITTED
    assert (group.judgments_count, group.active_reservations) == (1, 0)


def test_submit_is_idempotent_and_a_changed_answer_is_refused():
    user, a, group = reserve()
    labels = by_position(a, {0: "preferred", 1: "non_preferred"})
    first, created = judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels)
    # a retry (the same marks; the neutral video named or not, playback measured anew) answers as the first did
    retry = [replace(lab, playback_coverage=0.5) for lab in labels] + by_position(a, {2: "neutral"})
    again, created_again = judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=retry)
    assert created and not created_again and again.pk == first.pk
    for outcome, changed in (("all_bad", []), ("labelled", by_position(a, {0: "non_preferred", 1: "preferred"}))):
        with pytest.raises(JudgmentError, match="already submitted with another answer") as refused:
            judgment_submit(annotator=user, assignment_id=a.pk, outcome=outcome, labels=changed)
        assert refused.value.status == 409
    assert Judgment.objects.get().outcome == "labelled" and Judgment.objects.count() == 1
    group.refresh_from_db()
    assert group.judgments_count == 1


@pytest.mark.parametrize(
    "case, outcome, make_labels, skip_reason, message",
    [
        ("outside", "labelled", lambda a: [LabelInput(candidate_id=10**9, label="preferred")],
         "", J.ERR_UNKNOWN_CANDIDATE),  # never echoes an id
        ("bad position", "labelled", lambda a: [LabelInput(position=7, label="preferred")],
         "", J.ERR_CANDIDATE_NOT_IN_ASSIGNMENT.format(value=8)),  # 1-based, as the page numbers videos
        ("unknown label", "labelled", lambda a: by_position(a, {0: "great"}), "", J.ERR_UNKNOWN_LABEL.format(value="great")),
        ("unknown tag", "labelled",
         lambda a: by_position(a, {0: "preferred", 1: "non_preferred"}, flaws={0: [FlawInput("nope")]}),
         "", J.ERR_UNKNOWN_FLAW_TAG.format(value="nope")),
        ("unknown outcome", "maybe", lambda a: [], "", J.ERR_UNKNOWN_OUTCOME.format(value="maybe")),
        ("all bad + preferred", "all_bad", lambda a: by_position(a, {0: "preferred"}), "",
         J.ERR_CONTRADICTORY_LABELS.format(detail="'all_bad' cannot also mark candidates better or worse")),
        ("twice", "labelled", lambda a: by_position(a, {0: "preferred", 1: "non_preferred"}) + by_position(a, {0: "non_preferred"})[:1],
         "", J.ERR_DUPLICATE_CANDIDATE.format(value=1)),  # the position, not the candidate id
        ("nothing implied", "labelled", lambda a: by_position(a, {0: "preferred"}), "", J.ERR_NOTHING_IMPLIED),
        ("skip without reason", "skipped", lambda a: [], "", J.ERR_SKIP_REASON_REQUIRED),
        ("skip with preference", "skipped", lambda a: by_position(a, {0: "preferred", 1: "non_preferred"}), "broken",
         J.ERR_CONTRADICTORY_LABELS.format(detail="a skipped group cannot carry preferences")),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(case, outcome, make_labels, skip_reason, message):
    user, a, _ = reserve()
    with pytest.raises(JudgmentError) as exc:
        judgment_submit(annotator=user, assignment_id=a.pk, outcome=outcome, labels=make_labels(a), skip_reason=skip_reason)
    assert exc.value.message == message and exc.value.status == 400
    assert nothing_stored()
    assert Assignment.objects.get(pk=a.pk).status == Assignment.Status.RESERVED


def test_group_not_assigned_to_the_user_is_refused():
    user, a, _ = reserve()
    with pytest.raises(JudgmentError) as exc:
        judgment_submit(annotator=annotator(), assignment_id=a.pk, outcome="all_good", labels=[])
    assert exc.value.message == J.ERR_ASSIGNMENT_NOT_YOURS and exc.value.status == 403
    assert nothing_stored()


def test_expired_reservation_is_refused():
    user, a, _ = reserve()
    Assignment.objects.filter(pk=a.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(JudgmentError) as exc:
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="all_good", labels=by_position(a))
    assert exc.value.message == J.ERR_RESERVATION_EXPIRED and exc.value.status == 409
    assert nothing_stored()


def test_full_playback_required():
    user, a, _ = reserve(k=2, require_full_playback=True)
    labels = [LabelInput(candidate_id=a.shown_order[0], label="preferred", playback_coverage=1.0),
              LabelInput(candidate_id=a.shown_order[1], label="non_preferred", playback_coverage=0.3)]
    with pytest.raises(JudgmentError) as exc:
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels)
    assert exc.value.message == J.ERR_PLAYBACK_INCOMPLETE.format(missing="video 2")
    assert nothing_stored()
    # skipping needs no playback
    judgment_submit(annotator=user, assignment_id=a.pk, outcome="skipped", labels=[], skip_reason="broken video")


def test_best_worst_and_ranking_modes():
    user, a, _ = reserve(annotation_mode="best_worst")
    with pytest.raises(JudgmentError, match="exactly one best"):
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled",
                        labels=by_position(a, {0: "preferred", 1: "preferred", 2: "non_preferred"}))
    judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=by_position(a, {0: "preferred", 3: "non_preferred"}))
    o = a.shown_order
    pairs = set(PreferencePair.objects.values_list("chosen_id", "rejected_id"))
    assert pairs == {(o[0], o[1]), (o[0], o[2]), (o[0], o[3]), (o[1], o[3]), (o[2], o[3])}

    user, a, _ = reserve(annotation_mode="ranking")
    with pytest.raises(JudgmentError, match="Rank every candidate"):
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=by_position(a, ranks={0: 1, 1: 1, 2: 2, 3: 3}))
    judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=by_position(a, ranks={0: 2, 1: 1, 2: 4, 3: 3}))
    o = a.shown_order
    ranked = [o[1], o[0], o[3], o[2]]
    expected = {(ranked[i], ranked[j]) for i in range(4) for j in range(i + 1, 4)}
    assert set(PreferencePair.objects.filter(group_id=a.group_id).values_list("chosen_id", "rejected_id")) == expected


def test_ties_and_all_bad_make_no_pair_but_lower_agreement():
    group = group_with_candidates(k=2, round=RoundFactory(annotators_per_group=3, max_annotators_per_group=3))
    users = [annotator() for _ in range(3)]
    assignments = [assignment_reserve_next(annotator=u) for u in users]
    a0 = assignments[0]
    winner, loser = a0.shown_order[0], a0.shown_order[1]
    judgment_submit(annotator=users[0], assignment_id=a0.pk, outcome="labelled", labels=by_candidate(a0, {winner: "preferred", loser: "non_preferred"}))
    judgment_submit(annotator=users[1], assignment_id=assignments[1].pk, outcome="all_bad", labels=by_position(assignments[1]))
    judgment_submit(annotator=users[2], assignment_id=assignments[2].pk, outcome="labelled",
                    labels=by_candidate(assignments[2], {winner: "preferred", loser: "non_preferred"}))
    pair = PreferencePair.objects.get()
    assert (pair.chosen_id, pair.rejected_id, pair.votes_for, pair.votes_against, pair.n_annotators) == (winner, loser, 2, 0, 3)
    assert pair.agreement == pytest.approx(2 / 3) and pair.weight == pytest.approx(2 / 3)
    assert pair.source_judgments.count() == 2
    assert Judgment.objects.filter(outcome="all_bad").count() == 1
    group.refresh_from_db()
    assert group.status == CandidateGroup.Status.DONE


def test_disagreement_adds_an_annotator_then_goes_to_review():
    group = group_with_candidates(k=2, round=RoundFactory(annotators_per_group=2, max_annotators_per_group=3))
    users = [annotator() for _ in range(4)]
    x, y = sorted(group.candidates.values_list("id", flat=True))
    for i, user in enumerate(users[:2]):
        a = assignment_reserve_next(annotator=user)
        order = {x: "preferred", y: "non_preferred"} if i == 0 else {y: "preferred", x: "non_preferred"}
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=by_candidate(a, order))
    group.refresh_from_db()
    assert (group.status, group.target_judgments) == (CandidateGroup.Status.READY, 3)  # 1:1 -> one more annotator
    assert not PreferencePair.objects.exists()
    a = assignment_reserve_next(annotator=users[2])
    assert a is not None and a.group_id == group.pk
    judgment_submit(annotator=users[2], assignment_id=a.pk, outcome="labelled", labels=by_candidate(a, {x: "preferred", y: "non_preferred"}))
    group.refresh_from_db()
    # 2:1 is a majority of 2/3, at the cap: closed with a pair of agreement 2/3, no review
    assert group.status == CandidateGroup.Status.DONE
    pair = PreferencePair.objects.get()
    assert (pair.chosen_id, pair.votes_for, pair.votes_against) == (x, 2, 1)
    assert assignment_reserve_next(annotator=users[3]) is None


def test_unresolved_disagreement_at_the_cap_opens_a_review_item():
    group = group_with_candidates(k=2, round=RoundFactory(annotators_per_group=2, max_annotators_per_group=2))
    x, y = sorted(group.candidates.values_list("id", flat=True))
    for i in range(2):
        user = annotator()
        a = assignment_reserve_next(annotator=user)
        order = {x: "preferred", y: "non_preferred"} if i == 0 else {y: "preferred", x: "non_preferred"}
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=by_candidate(a, order))
    group.refresh_from_db()
    assert group.status == CandidateGroup.Status.REVIEW
    assert ReviewItem.objects.get(group=group).status == ReviewItem.Status.OPEN


def test_gold_failures_pause_the_annotator(settings):
    settings.VIDEODPO = {**settings.VIDEODPO, "QC_MIN_GOLD": 2, "QC_MIN_GOLD_ACCURACY": 0.6}
    rnd = RoundFactory(gold_rate=1.0)
    user = annotator()
    for _ in range(2):
        gold = group_with_candidates(k=2, round=rnd, is_gold=True)
        group_with_candidates(k=2, round=rnd)
        good, bad = sorted(gold.candidates.values_list("id", flat=True))
        gold.gold_answer = {"preferred": [good], "non_preferred": [bad]}
        gold.save()
        a = assignment_reserve_next(annotator=user)
        assert a.group_id == gold.pk
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=by_candidate(a, {bad: "preferred", good: "non_preferred"}))
    profile = AnnotatorProfile.objects.get(user=user)
    assert profile.is_paused and "gold accuracy 0%" in profile.paused_reason
    assert not PreferencePair.objects.exists()  # gold groups are scored, not turned into pairs
