"""One error path: refusals from the services come back as clear 4xx answers (API: ``{"detail": ...}``; pages: the
message, flashed or in the error page/partial), never a 500; one permission style with one message per role; one
media-link scheme whose bad, expired or dangling links are 404s."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from annotation import errors, media, permissions
from annotation.models import DPORun, ReviewItem, Round
from annotation.research.apis_exports import ERR_ROUNDS
from annotation.services.assignments import AnnotatorPausedError
from annotation.services.exports import ExportError
from annotation.services.judgments import JudgmentError, JudgmentExpired, JudgmentForbidden
from annotation.services.prompt_edits import PromptError
from annotation.services.reviews import ERR_REVIEW_CANDIDATE, ERR_REVIEW_RESOLVED, ReviewError
from tests.annotation.factories import CheckpointFactory, RoundFactory, UserFactory, group_with_candidates
from tests.annotation.helpers import api, login

pytestmark = pytest.mark.django_db


def test_every_service_refusal_is_an_application_error_with_its_status():
    for cls, status in ((JudgmentError, 400), (JudgmentForbidden, 403), (JudgmentExpired, 409), (PromptError, 400),
                        (ReviewError, 400), (ExportError, 400), (AnnotatorPausedError, 403)):
        exc = cls("why") if cls is not AnnotatorPausedError else cls("low gold accuracy")
        assert isinstance(exc, errors.ApplicationError) and exc.status == status, cls
    assert isinstance(ExportError("x"), ValueError)  # still caught where a ValueError was expected


def test_api_answers_application_errors_with_detail_and_status():
    researcher = UserFactory(roles=["researcher"])
    res = api(researcher).get("/research/api/leaderboard/", {"rounds": "1,x"})
    assert res.status_code == 400 and res.json() == {"detail": ERR_ROUNDS}
    res = api(researcher).post("/api/prompts/import/", [["not", "an", "object"]], format="json")
    assert res.status_code == 400 and res.json() == {"detail": "Item 0: expected an object or a string."}
    res = api(researcher).post("/api/prompts/create/", {"text": "a fox", "category": "no-such-category"}, format="json")
    assert res.status_code == 400 and "no-such-category" in res.json()["detail"]
    res = api(researcher).post("/research/api/exports/", {"format": "trl", "rounds": [987654]}, format="json")
    assert res.status_code == 400 and res.json()["detail"]  # nothing to export: ExportError through the handler


def test_paused_annotator_gets_403_with_the_reason_on_the_api():
    from annotation.services.quality import annotator_pause

    user = UserFactory(roles=["annotator"])
    annotator_pause(annotator=user, reason="gold accuracy too low")
    res = api(user).get("/api/groups/next/")
    assert res.status_code == 403 and "gold accuracy too low" in res.json()["detail"]


def test_one_message_per_role_on_pages_and_api():
    annotator = UserFactory(roles=["annotator"])
    page = login(annotator).get("/research/")
    assert page.status_code == 403 and permissions.ERR_NOT_RESEARCHER in page.content.decode()
    res = api(annotator).get("/api/pairs/")
    assert res.status_code == 403 and res.json()["detail"] == permissions.ERR_NOT_RESEARCHER
    researcher = UserFactory(roles=["researcher"])
    page = login(researcher).get("/annotate/")
    assert page.status_code == 403 and permissions.ERR_NOT_ANNOTATOR in page.content.decode()
    res = api(researcher).get("/api/groups/next/")
    assert res.status_code == 403 and res.json()["detail"] == permissions.ERR_NOT_ANNOTATOR
    assert Client().get("/qc/").status_code == 302  # anonymous: to the login page


def test_research_actions_flash_refusals_and_never_500():
    researcher = UserFactory(roles=["researcher"])
    client = login(researcher)
    ckpt = CheckpointFactory()
    run = DPORun.objects.create(name="finished", init_checkpoint=ckpt, reference_checkpoint=ckpt,
                                status=DPORun.Status.DONE)
    res = client.post(f"/research/dpo-runs/{run.id}/cancel/", follow=True)
    assert res.status_code == 200 and "only queued or running runs can be cancelled" in res.content.decode()
    done = RoundFactory(status=Round.Status.DONE)
    res = client.post(f"/research/rounds/{done.id}/cancel/", follow=True)
    assert res.status_code == 200 and 'class="error"' in res.content.decode()
    assert Round.objects.get(id=done.id).status == Round.Status.DONE
    res = client.post(f"/research/checkpoints/{ckpt.id}/evaluate/", {"seeds_per_prompt": "many"}, follow=True)
    assert res.status_code == 200 and 'class="error"' in res.content.decode() and not Round.objects.filter(
        kind=Round.Kind.EVALUATION).exists()
    res = client.post("/research/checkpoints/average/", {"checkpoints": ["x", str(ckpt.id)], "name": "avg"}, follow=True)
    assert res.status_code == 200 and 'class="error"' in res.content.decode()
    assert client.get("/research/dpo-runs/987654/").status_code == 404


def test_review_form_refusal_shows_the_message_and_malformed_keys_are_ignored():
    reviewer = login(UserFactory(roles=["reviewer"]))
    group = group_with_candidates(k=2)
    stranger = group_with_candidates(k=2).candidates.first().pk
    item = ReviewItem.objects.create(group=group, reason="disagreement")
    a, b = group.candidates.order_by("id").values_list("id", flat=True)
    res = reviewer.post(f"/review/{item.pk}/", {"decision_x": "preferred", f"decision_{stranger}": "preferred"})
    assert res.status_code == 400 and ERR_REVIEW_CANDIDATE.format(value=stranger) in res.content.decode()
    res = reviewer.post(f"/review/{item.pk}/", {"decision_x": "junk", f"decision_{a}": "preferred",
                                                f"decision_{b}": "non_preferred"})
    assert res.status_code == 302
    res = reviewer.post(f"/review/{item.pk}/", {f"decision_{a}": "preferred", f"decision_{b}": "non_preferred"})
    assert res.status_code == 400 and ERR_REVIEW_RESOLVED in res.content.decode()


def test_media_links_forged_expired_or_dangling_are_404():
    viewer = Client()
    good_key = media.key_media_path(key="nowhere/x.bin", ttl_s=60, user_id=None)
    assert viewer.get(good_key).status_code == 404  # signed, but no such object (and bound to nobody)
    expired = media.key_media_path(key="nowhere/x.bin", ttl_s=-5, user_id=None)
    res = viewer.get(expired)
    assert res.status_code == 404 and media.ERR_LINK_EXPIRED in res.content.decode()
    forged = good_key[:-4] + "abcd"
    res = viewer.get(forged)
    assert res.status_code == 404 and media.ERR_LINK_INVALID in res.content.decode()
    dangling = media.assignment_media_path(handle="00000000-0000-4000-8000-000000000000", position=0, kind="v", expires=int(time.time()) + 60)
    assert viewer.get(dangling).status_code == 404
    other_kind = "/m/" + media.media_token(target=("a", "x", 0, "z"), expires=int(time.time()) + 60)
    assert viewer.get(other_kind).status_code == 404
    assert viewer.get("/m/not-a-token").status_code == 404
