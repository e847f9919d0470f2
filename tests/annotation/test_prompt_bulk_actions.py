"""Bulk actions on the prompt pool in the admin (issue 18 item 9): activate, retire, held out, not held out; tags."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from annotation.models import Prompt
from annotation.services.prompt_bulk import prompts_bulk_set

pytestmark = pytest.mark.django_db


def test_admin_bulk_actions_on_prompts(client):
    admin = get_user_model().objects.create_superuser("boss", "boss@example.org", "pw-admin-1")
    client.force_login(admin)
    ids = [Prompt.objects.create(text=f"prompt {i}", text_hash=f"h{i}").pk for i in range(3)]
    page = client.get("/admin/annotation/prompt/").content.decode()
    for name in ("prompts_is_active_false", "prompts_is_held_out_true", "prompts_is_held_out_false",
                 "prompts_is_active_true"):
        assert f'value="{name}"' in page
    client.post("/admin/annotation/prompt/", {"action": "prompts_is_active_false", "_selected_action": ids[:2]})
    client.post("/admin/annotation/prompt/", {"action": "prompts_is_held_out_true", "_selected_action": ids[1:]})
    state = dict(Prompt.objects.values_list("id", "is_active"))
    held = dict(Prompt.objects.values_list("id", "is_held_out"))
    assert [state[i] for i in ids] == [False, False, True] and [held[i] for i in ids] == [False, True, True]


def test_bulk_tags_are_added_once():
    p = Prompt.objects.create(text="t", text_hash="t", tags=["night"])
    assert prompts_bulk_set(prompt_ids=[p.pk], add_tags=["night", " rain ", ""]) == 1
    p.refresh_from_db()
    assert p.tags == ["night", "rain"]
