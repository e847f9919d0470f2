"""The importer without hidden steps (issue 18 items 9 and 13): it sets the prompt set, held-out and tags, and its dry
run counts what is already in the pool and says "valid, nothing imported"."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.models import Prompt
from annotation.services.accounts import user_create
from annotation.services.rounds import prompts_select

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_res(client):
    user_create(username="res", password="pw-research-1", roles=["researcher"])
    client.login(username="res", password="pw-research-1")
    return client


def test_import_sets_prompt_set_held_out_and_tags(client_res):
    data = "a lighthouse in a storm\n一座灯塔在风暴中\n".encode()
    page = client_res.post("/research/prompts/import/", {"file": SimpleUploadedFile("p.txt", data),
                                                          "prompt_set": "eval-2026", "held_out": "1",
                                                          "tags": "weather, night"}).content.decode()
    assert "Imported 2 prompts" in page
    prompts = list(Prompt.objects.select_related("prompt_set"))
    assert {p.prompt_set.name for p in prompts} == {"eval-2026"} and all(p.is_held_out for p in prompts)
    assert all(p.tags == ["night", "weather"] for p in prompts)
    assert prompts_select() == [] and len(prompts_select(held_out_only=True)) == 2  # evaluation rounds only


def test_dry_run_counts_the_pool_and_imports_nothing(client_res):
    Prompt.objects.create(text="a lighthouse in a storm", text_hash="x")  # a different hash: re-import it first
    client_res.post("/research/prompts/import/", {"file": SimpleUploadedFile("p.txt", b"a red kite\n")})
    assert Prompt.objects.count() == 2
    page = client_res.post("/research/prompts/import/", {"file": SimpleUploadedFile("p.txt", b"a red kite\na blue boat\n"),
                                                          "dry_run": "1", "prompt_set": "kept"}).content.decode()
    assert "Valid, nothing imported (dry run): 1 new prompts, 1 already in the pool." in page
    assert "1 would be created" in page and Prompt.objects.count() == 2
    assert 'name="prompt_set" maxlength="128" value="kept"' in page and 'name="dry_run" value="1" checked' in page
