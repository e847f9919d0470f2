"""An outside probe's findings (2026-12-07): crafted cursors, an annotator's round filter, answers that repeat or
overflow, odd number spellings, unknown fields and bodies Django refuses: each a clear 4xx in the app's own format,
nothing stored, never a 500 or Django's bare 400 page."""

from __future__ import annotations

import base64

import pytest

from annotation.models import FlawMark, FlawTag, Judgment
from annotation.services.assignments import assignment_reserve_next
from annotation.services.judgments import judgment_submit
from tests.annotation.factories import PromptFactory, RoundFactory, UserFactory, annotator, group_with_candidates
from tests.annotation.helpers import api, login

pytestmark = pytest.mark.django_db


def reserve(user=None):
    group_with_candidates(k=2, round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1))
    user = user or annotator()
    return user, assignment_reserve_next(annotator=user)


def form(a, **extra):
    return {"assignment": str(a.public_id), "outcome": "labelled", "label_0": "preferred", "label_1": "non_preferred",
            "coverage_0": "1", "coverage_1": "1", **extra}


def body(a, **first):
    return {"assignment": str(a.public_id), "outcome": "labelled",
            "labels": [{"position": 0, "label": "preferred", "playback_coverage": 1.0, **first},
                       {"position": 1, "label": "non_preferred", "playback_coverage": 1.0}]}


def cursor(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("raw", ["p=abc", "p=1.5", "r=1&p=abc", "p=\x00", "p=" + "9" * 30, "p=١٢"])
def test_a_crafted_cursor_is_a_404_invalid_cursor_not_a_500(raw):
    user, a = reserve()
    judgment_submit(annotator=user, assignment_id=a.pk, outcome="all_good", labels=[])
    res = api(user).get("/api/judgments/", {"cursor": cursor(raw)})
    assert res.status_code == 404 and res.json() == {"detail": "Invalid cursor"}, (res.status_code, res.content[:200])
    PromptFactory()
    researcher = api(UserFactory(roles=["researcher", "reviewer"]))
    for url in ("/api/pairs/", "/api/prompts/", "/api/judgments/"):
        res = researcher.get(url, {"cursor": cursor(raw)})
        assert res.status_code == 404 and res.json() == {"detail": "Invalid cursor"}, (url, res.status_code)


def test_a_cursor_the_api_made_still_pages():
    PromptFactory.create_batch(3)
    client = api(UserFactory(roles=["researcher", "reviewer"]))
    first = client.get("/api/prompts/", {"limit": 2}).json()
    second = client.get(first["next"]).json()
    assert len(first["results"]) == 2 and len(second["results"]) == 1


def test_an_annotator_cannot_ask_which_round_a_judged_group_came_from():
    user, a1 = reserve()
    judgment_submit(annotator=user, assignment_id=a1.pk, outcome="all_good", labels=[])
    _, a2 = reserve(user)
    judgment_submit(annotator=user, assignment_id=a2.pk, outcome="all_bad", labels=[])
    client = api(user)
    everything = [j["id"] for j in client.get("/api/judgments/").json()["results"]]
    assert len(everything) == 2
    for round_id in (a1.group.round_id, a2.group.round_id, 987654):  # the filter is ignored, as ``annotator`` is
        assert [j["id"] for j in client.get("/api/judgments/", {"round": round_id}).json()["results"]] == everything
    reviewer = api(UserFactory(roles=["reviewer"]))
    only = reviewer.get("/api/judgments/", {"round": a1.group.round_id}).json()["results"]
    assert len(only) == 1  # reviewers and researchers still filter


def test_a_skip_reason_past_2000_characters_is_refused_on_the_page_and_the_api():
    user, a = reserve()
    page = login(user).post("/annotate/submit/", {"assignment": str(a.public_id), "outcome": "skipped",
                                                       "skip_reason": "other", "skip_note": "x" * 200_000},
                                HTTP_HX_REQUEST="true")
    assert page.status_code == 400 and "too long" in page.content.decode() and page["HX-Retarget"] == "#submit-error"
    res = api(user).post("/api/judgments/submit/", {"assignment": str(a.public_id), "outcome": "skipped",
                                                    "skip_reason": "x" * 2001}, format="json")
    assert res.status_code == 400 and "skip_reason" in res.json()
    ok = login(user).post("/annotate/submit/", {"assignment": str(a.public_id), "outcome": "skipped",
                                                     "skip_reason": "other", "skip_note": "x" * 1990})
    assert ok.status_code == 302 and len(Judgment.objects.get().skip_reason) == len("other: ") + 1990


def test_the_same_flaw_twice_on_one_video_is_refused():
    user, a = reserve()
    tag = FlawTag.objects.order_by("order").first().slug
    res = api(user).post("/api/judgments/submit/", body(a, flaws=[{"tag": tag, "time_s": 0.1}] * 50), format="json")
    assert res.status_code == 400 and f"the flaw '{tag}' is marked twice" in res.json()["detail"], res.json()
    page = login(user).post("/annotate/submit/", {**form(a), "flaw_0": [tag] * 20}, HTTP_HX_REQUEST="true")
    assert page.status_code == 400 and "marked twice" in page.content.decode()
    assert not Judgment.objects.exists() and not FlawMark.objects.exists()
    other = FlawTag.objects.order_by("order")[1].slug  # one mark per tag and video: two tags, or one on each video
    ok = api(user).post("/api/judgments/submit/", body(a, flaws=[{"tag": tag}, {"tag": other}]), format="json")
    assert ok.status_code == 201 and FlawMark.objects.count() == 2


@pytest.mark.parametrize("time_s, ok", [(2.0, True), (2.09, True), (2.2, False), (3.1, False)])
def test_a_flaw_time_past_the_clip_is_refused_with_the_clip_length(time_s, ok):
    user, a = reserve()  # the factory's clips: 50 frames at 25 fps = 2 s
    tag = FlawTag.objects.order_by("order").first().slug
    res = api(user).post("/api/judgments/submit/", body(a, flaws=[{"tag": tag, "time_s": time_s}]), format="json")
    if ok:
        assert res.status_code == 201 and FlawMark.objects.get().time_s == time_s
    else:
        assert res.status_code == 400 and "(0 to 2 s)" in res.json()["detail"], res.json()


@pytest.mark.parametrize("field, value", [("flaw_time_0_{tag}", "1_0"), ("flaw_time_0_{tag}", "١"),
                                          ("coverage_0", "1_0"), ("time_spent_ms", "١٢"), ("coverage_0", " 1")])
def test_the_form_takes_plain_ascii_numbers_only(field, value):
    user, a = reserve()
    tag = FlawTag.objects.order_by("order").first().slug
    data = {**form(a), "flaw_0": tag, field.format(tag=tag): value}
    res = login(user).post("/annotate/submit/", data, HTTP_HX_REQUEST="true")
    assert res.status_code == 400 and "malformed" in res.content.decode(), res.content.decode()[:300]
    assert not Judgment.objects.exists()


@pytest.mark.parametrize("where", ["top", "label", "flaw"])
def test_unknown_fields_in_an_answer_are_refused_not_dropped(where):
    user, a = reserve()
    tag = FlawTag.objects.order_by("order").first().slug
    data = body(a, flaws=[{"tag": tag, **({"when": 1.0} if where == "flaw" else {})}],
                **({"segmnts": ["preferred"]} if where == "label" else {}))
    if where == "top":
        data["seed"] = 3
    res = api(user).post("/api/judgments/submit/", data, format="json")
    assert res.status_code == 400, res.json()
    assert {"top": "seed", "label": "segmnts", "flaw": "when"}[where] in str(res.json()) and "Unknown field" in str(res.json())
    assert not Judgment.objects.exists()


def test_a_form_with_too_many_fields_is_a_400_in_the_apps_format(settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 50
    user, a = reserve()
    data = {**form(a), **{f"pad_{k}": "x" for k in range(60)}}
    page = login(user).post("/annotate/submit/", data, HTTP_HX_REQUEST="true")
    assert page.status_code == 400 and page["HX-Retarget"] == "#submit-error"
    assert "too many fields (over 50)" in page.content.decode()
    res = api(user).post("/api/judgments/submit/", data)  # form-encoded to the API: JSON back
    assert res.status_code == 400 and res.json() == {"detail": "The form has too many fields (over 50): send less at once."}
    assert not Judgment.objects.exists()


def test_a_body_over_the_limit_is_a_413_in_the_apps_format(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    user, a = reserve()
    data = {**form(a), "pad": "x" * 2000}
    res = api(user).post("/api/judgments/submit/", data)
    assert res.status_code == 413 and "too large (over 1000 bytes" in res.json()["detail"]
    page = login(user).post("/annotate/submit/", data, HTTP_HX_REQUEST="true")
    assert page.status_code == 413 and "too large" in page.content.decode()
    assert not Judgment.objects.exists()


def test_a_nul_in_an_api_query_is_a_json_400():
    user, _ = reserve()
    res = api(user).get("/api/judgments/", {"round": "\x00"})
    assert res.status_code == 400 and "NUL" in res.json()["detail"]


def test_a_round_of_10_to_the_30_prompts_is_refused_not_read_as_every_prompt():
    from annotation.models import Round

    PromptFactory.create_batch(2)
    checkpoint = RoundFactory().policy_checkpoint
    client = api(UserFactory(roles=["researcher"]))
    res = client.post("/api/rounds/create/", {"name": "huge", "checkpoint": checkpoint.pk, "sample_size": 10**30}, format="json")
    assert res.status_code == 400 and "sample_size" in res.json(), res.json()
    assert not Round.objects.filter(name="huge").exists()
    from annotation.services.rounds import prompts_select

    with pytest.raises(Exception, match="from 1 to 100000"):
        prompts_select(sample_size=10**30)
    assert len(prompts_select(sample_size=5)) == 2  # a sample larger than the matches is still all of them


@pytest.mark.parametrize("ttl", [True, False, 1.5, "x"])
def test_an_export_link_lifetime_must_be_a_number_of_seconds(ttl):
    from annotation.exports.filters import ExportFilterError, filter_parse

    with pytest.raises(ExportFilterError, match="media_ttl_s must be a whole number"):
        filter_parse({"media": "links", "media_ttl_s": ttl}, format="trl")


@pytest.mark.parametrize("uri", ["s3://../../etc/passwd", "file:///etc/passwd", "/etc/passwd", "file:///{media}/../x",
                                 "s3://other-bucket/a.safetensors"])
def test_a_dpo_run_cannot_point_its_settings_at_files_outside_the_apps_storage(uri, settings):
    from django.core.exceptions import ValidationError

    from annotation.services.dpo_runs import dpo_run_create

    rnd = RoundFactory()
    with pytest.raises(ValidationError, match="must name an object of this app's storage"):
        dpo_run_create(name="r", round_ids=[rnd.pk], init_checkpoint=rnd.policy_checkpoint, launch=False,
                       config_overrides={"null_text_embedding_uri": uri.format(media=settings.MEDIA_ROOT)})


def test_the_apps_own_storage_uris_are_storage_uris():
    from annotation import storage

    assert storage.is_storage_uri(storage.uri_for("text-embeddings/empty.safetensors"))
    assert not storage.is_storage_uri(storage.uri_for("a") + "/../../../etc/passwd")
