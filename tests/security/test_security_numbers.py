"""Finding 2: every client number finite and in range; stored rows checked; renderers never emit NaN/Infinity."""

from __future__ import annotations

import io
import math

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.test import Client
from rest_framework.test import APIClient

from annotation.models import Candidate, CandidateLabel, FlawMark, FlawTag, Judgment
from annotation.services.assignments import assignment_reserve_next
from annotation.services.judgments import FlawInput, JudgmentError, LabelInput, judgment_submit
from tests.annotation.factories import RoundFactory, UserFactory, annotator, group_with_candidates

pytestmark = pytest.mark.django_db


def reserve():
    group_with_candidates(k=2, round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1))
    user = annotator()
    return user, assignment_reserve_next(annotator=user)


def labels(a, *, time_s=0.5, coverage=1.0):
    tag = FlawTag.objects.order_by("order").first().slug
    return [LabelInput(candidate_id=a.shown_order[0], label="preferred", playback_coverage=coverage,
                       flaws=(FlawInput(tag, time_s),)),
            LabelInput(candidate_id=a.shown_order[1], label="non_preferred", playback_coverage=1.0)]


@pytest.mark.parametrize("time_s", [math.inf, -math.inf, math.nan, -0.1, 1e9, 3600.0])
def test_service_refuses_a_flaw_time_outside_the_clip(time_s):
    user, a = reserve()
    with pytest.raises(JudgmentError):
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels(a, time_s=time_s))
    assert not Judgment.objects.exists()


@pytest.mark.parametrize("coverage", [math.inf, math.nan, -0.01, 1.01])
def test_service_refuses_coverage_outside_0_1(coverage):
    user, a = reserve()
    with pytest.raises(JudgmentError):
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels(a, coverage=coverage))


@pytest.mark.parametrize("ms", [-1, 10**12, 1.5, math.inf])
def test_service_refuses_time_spent_out_of_range(ms):
    user, a = reserve()
    with pytest.raises(JudgmentError):
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels(a), time_spent_ms=ms)


def test_a_flaw_time_within_the_clip_is_kept():
    user, a = reserve()
    judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels(a, time_s=1.9))
    assert FlawMark.objects.get().time_s == 1.9


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e400"])
def test_html_form_with_non_finite_flaw_time_is_a_4xx_and_lists_stay_json(value):
    user, a = reserve()
    client = Client()
    client.force_login(user)
    tag = FlawTag.objects.order_by("order").first().slug
    res = client.post("/annotate/submit/", {"assignment": str(a.public_id), "outcome": "labelled", "label_0": "preferred",
                                            "label_1": "non_preferred", "coverage_0": "1", "coverage_1": "1",
                                            f"flaw_{0}": tag, "flaw_time_0": value}, HTTP_HX_REQUEST="true")
    assert 400 <= res.status_code < 500
    assert not Judgment.objects.exists()
    api = APIClient()
    api.force_authenticate(user)
    assert api.get("/api/judgments/").status_code == 200
    reviewer = APIClient()
    reviewer.force_authenticate(UserFactory(roles=["reviewer"]))
    assert reviewer.get("/api/judgments/").status_code == 200


def test_the_database_refuses_non_finite_flaw_times():
    user, a = reserve()
    judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels(a))
    mark = FlawMark.objects.get()
    for bad in (math.inf, math.nan):
        with pytest.raises(IntegrityError), transaction.atomic():
            FlawMark.objects.filter(pk=mark.pk).update(time_s=bad)
    with pytest.raises(IntegrityError), transaction.atomic():
        CandidateLabel.objects.filter(judgment__isnull=False).update(playback_coverage=math.inf)


def test_check_numbers_reports_and_fixes_stored_non_finite_values():
    group_with_candidates(k=2)
    out = io.StringIO()
    call_command("check_numbers", stdout=out)
    assert "no non-finite numbers stored" in out.getvalue()
    Candidate.objects.filter(pk=Candidate.objects.first().pk).update(duration_s=math.inf)
    with pytest.raises(SystemExit):
        call_command("check_numbers", stdout=io.StringIO(), stderr=io.StringIO())
    out = io.StringIO()
    call_command("check_numbers", "--fix", stdout=out)
    assert "Candidate.duration_s: 1 non-finite value(s) set to NULL" in out.getvalue()
    call_command("check_numbers", stdout=io.StringIO())


def test_raw_export_refuses_to_write_non_finite_json():
    from annotation.exports.formats import _dumps

    with pytest.raises(ValueError):
        _dumps({"x": math.inf})
