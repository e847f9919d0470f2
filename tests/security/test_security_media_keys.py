"""Finding 9 (object-key links): a video link on a reviewer or researcher page is bound to the signed-in user it was
made for and is short-lived. Another reviewer, an annotator, an anonymous request, or the same user after losing the
role get a 404; an API script downloading an export with its own token gets the file, another token does not."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client
from knox.models import AuthToken

from annotation import media, storage
from annotation.models import ReviewItem
from tests.annotation.factories import CandidateFactory, GroupFactory, UserFactory

pytestmark = pytest.mark.django_db
PAYLOAD = b"\x00\x01video-bytes" * 100


@pytest.fixture
def local_storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "annotation.storage.OverwritingFileSystemStorage",
        "OPTIONS": {"location": str(tmp_path), "base_url": "/media/"},
    }}
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


def add_stored_videos(group, k: int = 2) -> None:
    """``k`` candidates whose videos are stored objects (PAYLOAD plus the candidate's index)."""
    for i in range(k):
        cand = CandidateFactory(group=group)
        key = storage.candidate_key(round_id=group.round_id, group_id=group.pk, candidate_id=cand.pk,
                                    filename="video.mp4")
        cand.video_uri = storage.object_save(key=key, data=PAYLOAD + bytes([i]), content_type="video/mp4")
        cand.save(update_fields=["video_uri"])


@pytest.fixture
def review_link(local_storage):
    group = GroupFactory()
    add_stored_videos(group)
    item = ReviewItem.objects.create(group=group, reason="disagreement")
    owner = UserFactory(roles=["reviewer"])
    client = Client()
    client.force_login(owner)
    html = client.get(f"/review/{item.pk}/").content.decode()
    links = re.findall(r'src="(/m/[^"]+)"', html)
    assert len(links) == 2
    return owner, client, links[0]


def logged_in(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_page_link_serves_only_the_user_it_was_made_for(review_link):
    owner, client, link = review_link
    assert client.get(link).status_code == 200
    assert client.get(link, HTTP_RANGE="bytes=0-9").status_code == 206
    for other in (UserFactory(roles=["reviewer"]), UserFactory(roles=["researcher"]), UserFactory(roles=["annotator"])):
        res = logged_in(other).get(link)
        assert res.status_code == 404 and media.ERR_LINK_NOT_YOURS in res.content.decode()
    assert Client().get(link).status_code == 404  # anonymous
    assert Client().head(link).status_code == 404
    owner.groups.clear()  # the role taken away: the links it was given stop working
    owner = type(owner).objects.get(pk=owner.pk)
    assert logged_in(owner).get(link).status_code == 404


def test_page_link_is_short_lived(review_link):
    _, _, link = review_link
    target_expiry = media._token_payload(link.rsplit("/", 1)[1].rstrip("/"))[-1]
    assert target_expiry - time.time() <= media.KEY_LINK_TTL_S + 1
    assert media.KEY_LINK_TTL_S <= 15 * 60


def test_forged_user_in_a_link_is_refused(review_link):
    owner, client, link = review_link
    token = link.rsplit("/", 1)[1].rstrip("/")
    kind, key, user_id, expires = media._token_payload(token)
    assert (kind, user_id) == ("k", owner.pk)
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert client.get(f"/m/{tampered}").status_code == 404


def test_export_link_needs_its_researcher_or_their_token(local_storage):
    researcher, other = UserFactory(roles=["researcher"]), UserFactory(roles=["researcher"])
    storage.object_save(key="exports/9/pairs.jsonl", data=PAYLOAD)
    link = storage.object_url(key="exports/9/pairs.jsonl", user=researcher, ttl_s=300)
    mine = Client(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=researcher)[1]}")
    theirs = Client(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=other)[1]}")
    assert b"".join(mine.get(link).streaming_content) == PAYLOAD
    assert theirs.get(link).status_code == 404
    assert Client(HTTP_AUTHORIZATION="Token not-a-token").get(link).status_code == 404
    assert logged_in(other).get(link).status_code == 404


def test_an_api_annotator_plays_its_groups_videos_with_its_token(local_storage):
    """``/api/groups/next/`` gives blind media links; a client that signs its calls with a token (no browser session)
    plays them with the same token, another annotator's token or none gets a 404."""
    from tests.annotation.factories import RoundFactory, annotator

    group = GroupFactory(round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1))
    add_stored_videos(group)
    holder, other = annotator(), annotator()
    mine = Client(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=holder)[1]}")
    theirs = Client(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=other)[1]}")
    page = mine.get("/api/groups/next/").json()
    link = page["candidates"][0]["video_url"]
    res = mine.get(link)
    assert res.status_code == 200 and b"".join(res.streaming_content).startswith(PAYLOAD)
    for client in (theirs, Client(), Client(HTTP_AUTHORIZATION="Token not-a-token")):
        res = client.get(link)
        assert res.status_code == 404 and media.ERR_LINK_NOT_YOURS in res.content.decode()
