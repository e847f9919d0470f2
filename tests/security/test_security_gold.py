"""Finding 4: annotators never learn which group was gold or its answer (at most a delayed aggregate)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from annotation.models import CandidateGroup, Judgment
from annotation.selectors.stats import OWN_GOLD_MIN
from annotation.services.assignments import assignments_for_annotator
from annotation.services.judgments import judgment_submit
from tests.annotation.factories import CandidateFactory, GroupFactory, RoundFactory, UserFactory, annotator
from tests.annotation.helpers import by_candidate

pytestmark = pytest.mark.django_db


def gold_round(n_gold: int):
    rnd = RoundFactory(gold_rate=1.0, annotators_per_group=1, max_annotators_per_group=1)
    for _ in range(n_gold + 1):
        g = GroupFactory(round=rnd, is_gold=True)
        a, b = CandidateFactory(group=g), CandidateFactory(group=g)
        CandidateGroup.objects.filter(pk=g.pk).update(gold_answer={"preferred": [a.pk], "non_preferred": [b.pk]})
        regular = GroupFactory(round=rnd)  # the queue picks a regular group first, then gold at the gold rate
        CandidateFactory(group=regular)
        CandidateFactory(group=regular)
    return rnd


def submit_one(user) -> Judgment:
    live = assignments_for_annotator(annotator=user, lookahead=0)
    a = live[0]
    answer = CandidateGroup.objects.get(pk=a.group_id).gold_answer  # the right answer: no automatic pause
    labels = by_candidate(a, {answer["preferred"][0]: "preferred", answer["non_preferred"][0]: "non_preferred"}
                          if answer else {a.shown_order[0]: "preferred", a.shown_order[1]: "non_preferred"})
    judgment, _ = judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels)
    return judgment


def own_stats(user) -> dict:
    client = APIClient()
    client.force_authenticate(user)
    return client.get("/api/annotators/me/stats/").json()


def test_a_gold_submit_changes_nothing_the_annotator_can_see():
    gold_round(1)
    user = annotator()
    before = own_stats(user)
    judgment = submit_one(user)
    assert judgment.group.is_gold
    after = own_stats(user)
    assert after["gold_n"] == before["gold_n"] == 0 and after["gold_accuracy"] is None
    home = Client()
    home.force_login(user)
    assert "<dt>Gold accuracy</dt><dd>–</dd>" in home.get("/").content.decode()
    # reviewers see it at once
    reviewer = APIClient()
    reviewer.force_authenticate(UserFactory(roles=["reviewer"]))
    assert reviewer.get(f"/api/annotators/{user.pk}/stats/").json()["gold_n"] == 1


def test_annotators_see_only_a_delayed_aggregate_over_many_gold_items():
    gold_round(OWN_GOLD_MIN + 1)
    user = annotator()
    judgments = [submit_one(user) for _ in range(OWN_GOLD_MIN)]
    assert all(j.group.is_gold for j in judgments)
    assert own_stats(user)["gold_n"] == 0  # today's gold never shows
    Judgment.objects.filter(pk__in=[j.pk for j in judgments]).update(created_at=timezone.now() - timedelta(days=1))
    stats = own_stats(user)
    assert stats["gold_n"] == OWN_GOLD_MIN and stats["gold_accuracy"] == 1.0
    submit_one(user)  # one more gold today: the aggregate does not move
    assert own_stats(user)["gold_n"] == OWN_GOLD_MIN
