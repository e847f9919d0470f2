"""Hypothesis-driven checks of the htmx form endpoints: whatever the form carries, the answer is never a 5xx and
nothing half-written is left (a refused submit stores nothing)."""

from __future__ import annotations

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation.models import CandidateLabel, Judgment, ReviewItem
from annotation.services.assignments import assignments_for_annotator
from tests.annotation.factories import RoundFactory, UserFactory, annotator, group_with_candidates

pytestmark = pytest.mark.django_db
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

odd_text = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "²", "٣", "1e309", "inf", "nan", "9" * 30, "9" * 5000, "\x00", "null",
                     "preferred", "non_preferred", "neutral", "labelled", "all_good", "skipped", "flicker"]),
    st.text(max_size=40),
)
keys = st.sampled_from(["assignment", "outcome", "label_0", "label_1", "label_9", "label_²", "rank_0", "rank_1",
                        "coverage_0", "coverage_1", "flaw_0", "flaw_time_0", "flaw_time_0_flicker", "time_spent_ms",
                        "skip_reason", "skip_note"])


@pytest.fixture
def workbench():
    group_with_candidates(k=2, round=RoundFactory(annotators_per_group=3, max_annotators_per_group=3))
    user = annotator()
    assignment = assignments_for_annotator(annotator=user, lookahead=0)[0]
    client = Client()
    client.force_login(user)
    return client, assignment


@FUZZ
@given(data=st.dictionaries(keys, odd_text, max_size=10), real_assignment=st.booleans(), htmx=st.booleans())
def test_annotate_submit_never_500(workbench, data, real_assignment, htmx):
    client, assignment = workbench
    if real_assignment:
        data = {**data, "assignment": str(assignment.public_id)}
    res = client.post("/annotate/submit/", data, **({"HTTP_HX_REQUEST": "true"} if htmx else {}))
    assert res.status_code < 500, (data, res.status_code)
    if res.status_code >= 400:
        assert res.content.strip()
    # a judgment is complete or absent: every stored judgment has a label per shown candidate (or is a skip)
    for j in Judgment.objects.all():
        assert j.outcome == "skipped" or CandidateLabel.objects.filter(judgment=j).count() == 2


@FUZZ
@given(data=st.dictionaries(st.one_of(st.sampled_from(["note"]), st.text(max_size=12).map(lambda s: "decision_" + s)),
                            odd_text, max_size=6))
def test_review_decision_never_500(data):
    group = group_with_candidates(k=2)
    ReviewItem.objects.get_or_create(group=group, defaults={"reason": "fuzz"})
    client = Client()
    client.force_login(UserFactory(roles=["reviewer"]))
    res = client.post(f"/review/{group.pk}/", data, HTTP_HX_REQUEST="true")
    assert res.status_code < 500, (data, res.status_code)
