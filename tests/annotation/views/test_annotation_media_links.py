"""Finding 9: blind media links are opaque, bound to the signed-in annotator and to the live reservation (with a
short grace), and answer HEAD."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from annotation.media import RESERVATION_GRACE_S
from annotation.models import Assignment
from tests.annotation.factories import RoundFactory, annotator

pytestmark = pytest.mark.django_db


def video_link(client) -> str:
    return re.search(r'src="(/m/[^"]+)"', client.get("/annotate/").content.decode()).group(1)


@pytest.fixture
def page(media_group):
    media_group(k=2, round=RoundFactory(annotators_per_group=2, max_annotators_per_group=2))
    user = annotator()
    client = Client()
    client.force_login(user)
    return user, client, video_link(client)


def test_link_works_for_its_annotator_with_get_head_and_ranges(page):
    _, client, link = page
    assert client.get(link).status_code == 200
    head = client.head(link)
    assert head.status_code == 200 and head["Accept-Ranges"] == "bytes"
    assert client.get(link, HTTP_RANGE="bytes=0-99").status_code == 206


def test_link_is_refused_to_anyone_else(page):
    _, _, link = page
    assert Client().get(link).status_code == 404  # anonymous
    other = Client()
    other.force_login(annotator())
    assert other.get(link).status_code == 404


def test_link_stops_working_after_the_reservation_ends(page):
    from django.core.cache import cache

    user, client, link = page
    Assignment.objects.filter(annotator=user).update(
        status=Assignment.Status.EXPIRED, expires_at=timezone.now() - timedelta(seconds=RESERVATION_GRACE_S + 1))
    cache.clear()
    assert client.get(link).status_code == 404


def test_payload_is_opaque_and_tamper_proof(page):
    user, client, link = page
    token = link.rsplit("/", 1)[1]
    raw = base64.urlsafe_b64decode(token.split(":")[0] + "=" * (-len(token.split(":")[0]) % 4))
    handles = [str(a) for a in Assignment.objects.filter(annotator=user).values_list("public_id", flat=True)]
    assert not any(h.encode() in raw for h in handles)
    assert b'"a"' not in raw and b"[" not in raw[:2]
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert client.get(f"/m/{tampered}").status_code == 404
    assert client.get("/m/" + "A" * 5000).status_code == 404
