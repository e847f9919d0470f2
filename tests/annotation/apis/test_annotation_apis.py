import pytest
from knox.models import AuthToken
from rest_framework.test import APIClient

from annotation.models import Judgment, PreferencePair, Prompt
from annotation.services import judgments as J
from annotation.services.prompts import ERR_EMPTY
from tests.annotation.factories import RoundFactory, UserFactory, annotator, group_with_candidates
from tests.annotation.helpers import without_random_tokens

pytestmark = pytest.mark.django_db


def client_for(user, token=False):
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=user)[1]}")
    else:
        client.force_authenticate(user)
    return client


def test_next_and_submit_over_the_api_with_token_auth(django_assert_max_num_queries):
    group = group_with_candidates(k=3, round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1))
    user = annotator()
    client = client_for(user, token=True)
    # token + roles + profile in one query; the annotator's advisory lock (at most 1 + lookahead reservations); no
    # savepoints
    with django_assert_max_num_queries(10):
        res = client.get("/api/groups/next/")
    assert res.status_code == 200
    body = res.json()
    assert body["prompt"] == group.prompt.text and len(body["candidates"]) == 3
    visible = without_random_tokens(res.content.decode())
    assert visible.count("/m/<token>") == 3  # the video links of the 3 candidates (they have no posters)
    assert "seed" not in visible and group.round.name not in visible
    payload = {
        "assignment": body["assignment"], "outcome": "labelled",
        "labels": [{"position": 0, "label": "preferred", "playback_coverage": 1.0,
                    "flaws": [{"tag": "flicker", "time_s": 0.5}]},
                   {"position": 1, "label": "non_preferred", "playback_coverage": 1.0}],
    }
    with django_assert_max_num_queries(15):
        first = client.post("/api/judgments/submit/", payload, format="json")
    assert first.status_code == 201, first.content
    again = client.post("/api/judgments/submit/", payload, format="json")  # a retry: the first answer again
    assert again.status_code == 200 and again.json() == first.json()
    changed = client.post("/api/judgments/submit/", {**payload, "outcome": "all_bad", "labels": []}, format="json")
    assert changed.status_code == 409 and "already submitted with another answer" in changed.json()["detail"]
    assert Judgment.objects.count() == 1 and PreferencePair.objects.count() == 1
    assert client.get("/api/groups/next/").status_code == 204


@pytest.mark.parametrize("labels, outcome, message", [
    ([{"position": 9, "label": "preferred"}], "labelled", J.ERR_CANDIDATE_NOT_IN_ASSIGNMENT.format(value=10)),
    ([{"position": 0, "label": "meh"}], "labelled", J.ERR_UNKNOWN_LABEL.format(value="meh")),
    ([{"position": 0, "label": "preferred", "flaws": [{"tag": "bogus"}]}, {"position": 1, "label": "non_preferred"}],
     "labelled", J.ERR_UNKNOWN_FLAW_TAG.format(value="bogus")),
    ([{"position": 0, "label": "preferred"}], "all_good",
     J.ERR_CONTRADICTORY_LABELS.format(detail="'all_good' cannot also mark candidates better or worse")),
])
def test_submit_bad_input_is_a_clear_400(labels, outcome, message):
    group_with_candidates(k=2)
    client = client_for(annotator())
    assignment = client.get("/api/groups/next/").json()["assignment"]
    res = client.post("/api/judgments/submit/", {"assignment": assignment, "outcome": outcome, "labels": labels}, format="json")
    assert res.status_code == 400 and res.json() == {"detail": message}
    assert not Judgment.objects.exists()


def test_submit_for_someone_elses_group_is_403():
    group_with_candidates(k=2)
    assignment = client_for(annotator()).get("/api/groups/next/").json()["assignment"]
    res = client_for(annotator()).post("/api/judgments/submit/", {"assignment": assignment, "outcome": "all_good"}, format="json")
    assert res.status_code == 403 and res.json()["detail"] == J.ERR_ASSIGNMENT_NOT_YOURS


def test_roles_on_the_api():
    researcher = UserFactory(roles=["researcher"])
    ann = annotator()
    assert client_for(ann).get("/api/pairs/").status_code == 403
    assert client_for(ann).get("/api/prompts/").status_code == 403
    assert client_for(researcher).get("/api/groups/next/").status_code == 403
    assert client_for(ann).get(f"/api/annotators/{researcher.pk}/stats/").status_code == 403
    assert client_for(ann).get("/api/annotators/me/stats/").json()["judgments"] == 0
    assert client_for(researcher).get(f"/api/annotators/{ann.pk}/stats/").status_code == 200
    assert client_for(researcher).get("/api/pairs/").status_code == 200
    assert APIClient().get("/api/judgments/").status_code in (401, 403)


def test_annotators_list_only_their_own_judgments():
    group_with_candidates(k=2, round=RoundFactory(annotators_per_group=2, max_annotators_per_group=2))
    users = [annotator(), annotator()]
    for user in users:
        c = client_for(user)
        a = c.get("/api/groups/next/").json()["assignment"]
        assert c.post("/api/judgments/submit/", {"assignment": a, "outcome": "all_good"}, format="json").status_code == 201
    mine = client_for(users[0]).get("/api/judgments/").json()["results"]
    assert [j["annotator"] for j in mine] == [users[0].pk]
    everyone = client_for(UserFactory(roles=["researcher"])).get("/api/judgments/").json()["results"]
    assert len(everyone) == 2


def test_prompt_crud_and_bulk_import():
    client = client_for(UserFactory(roles=["researcher"]))
    res = client.post("/api/prompts/create/", {"text": "一只熊猫在竹林里吃竹子", "category": "animals"}, format="json")
    assert res.status_code == 201 and res.json()["language"] == "zh" and res.json()["category"] == "animals"
    pid = res.json()["id"]
    assert client.post("/api/prompts/create/", {"text": "  "}, format="json").status_code == 400
    assert client.post(f"/api/prompts/{pid}/update/", {"is_active": False}, format="json").json()["is_active"] is False
    assert client.get(f"/api/prompts/{pid}/").json()["text"] == "一只熊猫在竹林里吃竹子"
    res = client.post("/api/prompts/import/", ["a cat surfing", {"text": "a dog skiing", "category": "sports"}, "a cat surfing"], format="json")
    assert res.status_code == 400 and res.json()["rejected"][0]["line"] == 3  # duplicate within the list: nothing stored
    res = client.post("/api/prompts/import/", {"prompt_set": "batch", "prompts": ["a cat surfing", {"text": "a dog skiing"}]}, format="json")
    assert res.status_code == 201 and res.json()["created"] == 2
    res = client.post("/api/prompts/import/", ["a cat surfing", ""], format="json")
    assert res.status_code == 400 and res.json()["rejected"] == [{"line": 2, "error": ERR_EMPTY}]
    assert client.post(f"/api/prompts/{pid}/delete/").status_code == 204
    assert Prompt.objects.count() == 2
    assert len(client.get("/api/prompts/").json()["results"]) == 2


def test_openapi_schema_lists_the_annotation_api():
    client = client_for(UserFactory(roles=["researcher"]))
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content.decode()
    for path in ("/api/groups/next/", "/api/judgments/submit/", "/api/pairs/", "/api/prompts/import/"):
        assert path in schema
