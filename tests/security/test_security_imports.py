"""Finding 6 (part): prompt imports over a configurable size are refused with a clear message, before any work; a
repeated upload of the same file is recognised (nothing created twice)."""

from __future__ import annotations

import io

import pytest
from django.test import Client
from rest_framework.test import APIClient

from annotation.models import Prompt
from tests.annotation.factories import UserFactory

pytestmark = pytest.mark.django_db


def upload(client, content: bytes, name: str = "prompts.txt"):
    f = io.BytesIO(content)
    f.name = name
    return client.post("/research/prompts/import/", {"file": f})


def test_import_page_refuses_a_file_over_the_limit(settings):
    settings.PROMPT_IMPORT_MAX_BYTES = 1000
    client = Client()
    client.force_login(UserFactory(roles=["researcher"]))
    res = upload(client, b"".join(b"prompt number %d about a cat\n" % i for i in range(100)))
    assert res.status_code == 200
    text = res.content.decode()
    assert "at most 0.0 MB" in text or "VIDEODPO_IMPORT_MAX_BYTES" in text
    assert not Prompt.objects.exists()


def test_bulk_api_over_the_limit_is_413_with_a_message(settings):
    settings.PROMPT_IMPORT_MAX_BYTES = 1000
    client = APIClient()
    client.force_authenticate(UserFactory(roles=["researcher"]))
    res = client.post("/api/prompts/import/", [f"prompt {i} about a dog" for i in range(200)], format="json")
    assert res.status_code == 413 and "VIDEODPO_IMPORT_MAX_BYTES" in res.json()["detail"]
    assert not Prompt.objects.exists()


def test_repeated_upload_is_recognised():
    client = Client()
    client.force_login(UserFactory(roles=["researcher"]))
    content = b"".join(b"prompt number %d about a bird\n" % i for i in range(20))
    first = upload(client, content).content.decode()
    assert "Imported 20 prompts (0 already in the pool)" in first
    again = upload(client, content).content.decode()
    assert "Imported 0 prompts (20 already in the pool)" in again
    assert Prompt.objects.count() == 20
