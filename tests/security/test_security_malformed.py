"""Finding 8: malformed input gets a 4xx with a message (or is ignored), never a 500."""

from __future__ import annotations

import io
import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from annotation.models import Judgment, Prompt, PromptSet, ReviewItem
from annotation.services.assignments import assignments_for_annotator
from tests.annotation.factories import PromptFactory, RoundFactory, UserFactory, annotator, group_with_candidates

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher_client():
    client = Client()
    client.force_login(UserFactory(roles=["researcher", "reviewer"]))
    return client


@pytest.fixture
def reserved():
    group_with_candidates(k=2, round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1))
    user = annotator()
    a = assignments_for_annotator(annotator=user, lookahead=0)[0]
    client = Client()
    client.force_login(user)
    return client, a


def form(a, **extra):
    return {"assignment": str(a.public_id), "outcome": "labelled", "label_0": "preferred", "label_1": "non_preferred",
            "coverage_0": "1", "coverage_1": "1", **extra}


@pytest.mark.parametrize("extra", [{"assignment": "²"}, {"assignment": "9" * 5000}, {"label_²": "preferred"},
                                   {"rank_0": "²"}, {"time_spent_ms": "²"}, {"time_spent_ms": "9" * 30}])
def test_annotate_submit_malformed_is_a_4xx_with_a_message(reserved, extra):
    client, a = reserved
    data = form(a, **extra)
    if "label_²" in extra:
        data = {k: v for k, v in data.items() if not k.startswith(("label_", "coverage_"))} | extra
    res = client.post("/annotate/submit/", data, HTTP_HX_REQUEST="true")
    assert 400 <= res.status_code < 500, res.status_code
    assert res.content.strip()
    assert not Judgment.objects.exists()


@pytest.mark.parametrize("url", ["/qc/?round=²", "/qc/?round=" + "9" * 5000, "/qc/?round=abc",
                                 "/research/leaderboard/?rounds=²", "/research/leaderboard/?rounds=" + "9" * 5000,
                                 "/research/leaderboard/?rounds=1,x"])
@pytest.mark.parametrize("htmx", [False, True])
def test_filters_with_odd_numbers_are_a_400_with_a_message(researcher_client, url, htmx):
    res = researcher_client.get(url, **({"HTTP_HX_REQUEST": "true"} if htmx else {}))
    assert res.status_code == 400, res.status_code
    assert "must be" in res.content.decode()  # the message, on the page or in the partial


def test_qc_for_a_missing_round_is_a_404_with_a_message(researcher_client):
    res = researcher_client.get("/qc/?round=987654")
    assert res.status_code == 404 and "There is no round 987654" in res.content.decode()


BAD_DATES = [{"date_from": "0001-01-01"}, {"date_to": "9999-12-31"}, {"date_from": "2024-02-30"},
             {"date_from": "2024-05-02", "date_to": "2024-05-01"}, {"date_from": "²"}]


@pytest.mark.parametrize("dates", BAD_DATES)
def test_export_with_out_of_range_dates_is_a_400_with_a_message(researcher_client, dates):
    from annotation.models import Export

    res = researcher_client.post("/research/api/exports/", {"format": "raw", **dates}, content_type="application/json")
    detail = res.json()["detail"]
    assert res.status_code == 400 and re.search(r"date_(from|to).*(must be|is after|format)", detail), detail
    page = researcher_client.post("/research/exports/create/", {"format": "raw", **dates})
    assert page.status_code == 400 and re.search(r"date_(from|to)[^<]*(must be|is after)", page.content.decode())
    assert not Export.objects.exists()


def test_deeply_nested_json_is_a_400():
    client = APIClient()
    client.force_authenticate(annotator())
    body = '{"assignment": 1, "outcome": "labelled", "labels": ' + "[" * 5000 + "]" * 5000 + "}"
    res = client.post("/api/judgments/submit/", body, content_type="application/json")
    assert res.status_code == 400 and "nested" in res.json()["detail"]
    res = client.post("/api/prompts/import/", "[" * 5000 + "]" * 5000, content_type="application/json")
    assert res.status_code in (400, 403)


def test_huge_range_header_on_media_is_not_500(reserved, media_token_url):
    client, _ = reserved
    res = client.get(media_token_url(client), HTTP_RANGE="bytes=" + "9" * 5000 + "-")
    assert res.status_code < 500


@pytest.fixture
def media_token_url():
    import re

    def find(client) -> str:
        html = client.get("/annotate/").content.decode()
        return re.search(r'src="(/m/[^"]+)"', html).group(1)

    return find


def test_review_decision_with_a_bad_name_is_not_500(researcher_client):
    group = group_with_candidates(k=2)
    ReviewItem.objects.create(group=group, reason="test")
    res = researcher_client.post(f"/review/{group.pk}/", {"decision_abc": "preferred"})
    assert res.status_code < 500


@pytest.mark.parametrize("url", ["/research/rounds/999999/retry-failed/", "/research/rounds/999999/cancel/",
                                 "/research/dpo-runs/999999/cancel/"])
def test_actions_on_missing_objects_are_404(researcher_client, url):
    assert researcher_client.post(url).status_code == 404


@pytest.mark.parametrize("url, data", [
    ("/research/dpo-runs/new/", {"name": "x", "config_overrides": "[1,2]"}),
    ("/research/checkpoints/average/", {"checkpoints": "abc", "name": "avg"}),
])
def test_research_forms_with_bad_values_are_not_500(researcher_client, url, data):
    from tests.annotation.factories import CheckpointFactory

    data = {**data, "init_checkpoint": str(CheckpointFactory().pk)}
    assert researcher_client.post(url, data).status_code < 500


def test_evaluate_with_bad_seeds_is_not_500(researcher_client):
    from tests.annotation.factories import CheckpointFactory

    ckpt = CheckpointFactory()
    res = researcher_client.post(f"/research/checkpoints/{ckpt.pk}/evaluate/", {"seeds_per_prompt": "abc"})
    assert res.status_code < 500


def test_prompt_api_limits():
    client = APIClient()
    client.force_authenticate(UserFactory(roles=["researcher"]))
    res = client.post("/api/prompts/create/", {"text": "a cat", "prompt_set": "x" * 129}, format="json")
    assert res.status_code == 400 and "at most 128" in res.json()["detail"]
    assert not PromptSet.objects.filter(name__startswith="xxx").exists()
    prompt = PromptFactory()
    res = client.post(f"/api/prompts/{prompt.pk}/update/", {"text": "a" * 100_000}, format="json")
    assert res.status_code == 400 and "longer than" in res.json()["detail"]
    res = client.post(f"/api/prompts/{prompt.pk}/update/", {"text": "a\x00b"}, format="json")
    assert res.status_code == 400
    res = client.post("/api/prompts/import/", ["ok prompt", "bad \x00 prompt"], format="json")
    assert res.status_code == 400 and "NUL" in str(res.json())
    assert not Prompt.objects.filter(text="ok prompt").exists()  # all or nothing


@pytest.mark.parametrize("name, content", [
    ("nul.txt", b"a fine prompt\nanother \x00 one\n"),
    ("big.csv", b"text\n" + b"a" * 140_000 + b"\n"),
])
def test_import_page_with_nul_or_huge_csv_field_is_not_500(researcher_client, name, content):
    upload = io.BytesIO(content)
    upload.name = name
    res = researcher_client.post("/research/prompts/import/", {"file": upload})
    assert res.status_code < 500
    assert not Prompt.objects.filter(text="a fine prompt").exists()
