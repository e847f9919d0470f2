import pytest

from annotation.selectors.stats import annotator_stats, round_quality
from annotation.services.assignments import assignment_reserve_next
from annotation.services.judgments import judgment_submit
from tests.annotation.factories import RoundFactory, annotator, group_with_candidates
from tests.annotation.helpers import by_candidate, by_position

pytestmark = pytest.mark.django_db


def test_annotator_stats_and_round_quality():
    rnd = RoundFactory(annotators_per_group=4, max_annotators_per_group=4, gold_rate=0.0)
    groups = [group_with_candidates(k=2, round=rnd) for _ in range(4)]
    gold = group_with_candidates(k=2, round=rnd, is_gold=True)
    g_good, g_bad = sorted(gold.candidates.values_list("id", flat=True))
    gold.gold_answer = {"preferred": [g_good], "non_preferred": [g_bad]}
    gold.save()
    users = [annotator() for _ in range(4)]
    for _ in groups:
        for i, user in enumerate(users):
            a = assignment_reserve_next(annotator=user)
            x, y = sorted(a.group.candidates.values_list("id", flat=True))
            # user 2 always prefers the first-shown video; the others always prefer the lower id, so user 0's peers
            # (1 and 3 for x, 2 either way) lean towards x whatever order user 2 was shown

            labels = by_position(a, {0: "preferred", 1: "non_preferred"}) if i == 2 else by_candidate(a, {x: "preferred", y: "non_preferred"})
            judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels, time_spent_ms=1000 * (i + 1))
    rnd.gold_rate = 1.0
    rnd.save()
    group_with_candidates(k=2, round=rnd)  # regular work so the gold group is mixed in
    a = assignment_reserve_next(annotator=users[0])
    assert a.group_id == gold.pk
    judgment_submit(annotator=users[0], assignment_id=a.pk, outcome="labelled", labels=by_candidate(a, {g_good: "preferred", g_bad: "non_preferred"}))

    s0 = annotator_stats(annotator_id=users[0].pk)
    assert (s0.judgments, s0.gold_n, s0.gold_accuracy) == (5, 1, 1.0)
    assert s0.median_time_s == pytest.approx(1.0)
    assert s0.mean_coverage == pytest.approx(1.0)
    assert (s0.peer_n, s0.peer_agreement) == (4, 1.0)
    s2 = annotator_stats(annotator_id=users[2].pk)
    assert s2.position_bias == 1.0 and s2.position_n == 4

    report = round_quality(round=rnd)
    overall = report["categories"][0]
    assert overall["category"] == "all" and overall["units"] == 8
    assert -1.0 <= overall["alpha_ordinal"] <= 1.0 and 0 <= overall["pairwise_agreement"] <= 1
    assert {row["annotator_id"] for row in report["annotators"]} == {u.pk for u in users}
