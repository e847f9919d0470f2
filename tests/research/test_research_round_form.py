"""The round form (issue 18 items 10 and 12): every choice kept after a refusal, refusals in users' words, the
"N prompts x K seeds = M videos" preview with an estimate from recent throughput (live in the browser), the default
k never above the annotators who exist, the disagreement cap as a round setting."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from annotation.models import Candidate, Category, Prompt, Round
from annotation.services.accounts import user_create
from tests.annotation.factories import CandidateFactory, GroupFactory, RoundFactory, ensure_default_data


@pytest.fixture
def researcher(db):
    return user_create(username="res", password="pw-research-1", roles=["researcher"])


def make_prompts(n: int, *, category=None, word="kite") -> None:
    for i in range(n):
        Prompt.objects.create(text=f"a {word} over the sea, take {i}", text_hash=f"{word}-{i}", category=category)


def test_default_k_follows_the_annotators_who_exist(client, researcher):
    client.force_login(researcher)
    user_create(username="a1", password="pw-annot-1", roles=["annotator"])
    user_create(username="a2", password="pw-annot-1", roles=["annotator"])
    page = client.get("/research/rounds/new/").content.decode()
    assert 'name="annotators_per_group" type="number" min="1" value="2"' in page
    assert "2 annotators can judge now" in page


def test_refusal_keeps_every_choice_in_users_words(client, researcher):
    client.force_login(researcher)
    cat = Category.objects.order_by("slug").last()
    make_prompts(2, category=cat)
    rnd = RoundFactory()  # a checkpoint to choose
    data = {"name": "r", "checkpoint": str(rnd.policy_checkpoint_id), "category": cat.slug, "search": "no such words",
            "sampler": "turbo", "annotation_mode": Round.Mode.RANKING, "seeds_per_prompt": "3",
            "annotators_per_group": "2", "max_annotators_per_group": "3", "gold_rate": "0.1", "aspect_judgments": "1"}
    page = client.post("/research/rounds/new/", data).content.decode()
    assert 'name="aspect_judgments" value="1" checked' in page
    assert "No prompt matches this filter" in page and "prompt_ids" not in page
    assert f'<option value="{cat.slug}" selected>' in page
    assert f'<option value="{Round.Mode.RANKING}" selected>' in page and '<option value="turbo" selected>' in page
    assert f'<option value="{rnd.policy_checkpoint_id}" selected>' in page
    assert 'name="max_annotators_per_group" type="number" min="1" placeholder="k + 2" value="3"' in page
    assert 'value="no such words"' in page and Round.objects.count() == 1
    assert 'name="exclude_flagged" value="1">' in page  # unticked in the refused form: kept unticked
    assert 'name="exclude_flagged" value="1" checked' in client.get("/research/rounds/new/").content.decode()


def test_screening_exclusion_is_a_choice_of_the_round_form(client, researcher, sent_tasks, monkeypatch):
    monkeypatch.setattr("annotation.services.candidates.checkpoint_validate", lambda checkpoint: None)
    client.force_login(researcher)
    make_prompts(2)
    checkpoint = RoundFactory().policy_checkpoint
    data = {"checkpoint": str(checkpoint.pk), "seeds_per_prompt": "2", "annotators_per_group": "1"}
    res = client.post("/research/rounds/new/", {**data, "name": "kept", "exclude_flagged": "1"})
    assert res.status_code == 302, re.findall(r"<li>(.*?)</li>", res.content.decode())
    assert client.post("/research/rounds/new/", {**data, "name": "shown"}).status_code == 302
    assert Round.objects.get(name="kept").exclude_flagged and not Round.objects.get(name="shown").exclude_flagged


def test_preview_counts_videos_and_estimates_from_recent_throughput(client, researcher):
    client.force_login(researcher)
    make_prompts(3)
    res = client.get("/research/rounds/new/preview/", {"seeds_per_prompt": "4"}).content.decode()
    assert "3 prompts × 4 seeds = 12 videos" in res and "no recent videos" in res
    # ten videos finished over five minutes: 2 per minute, so 12 videos take about 6 min
    group, now = GroupFactory(), timezone.now()
    for i in range(10):
        c = CandidateFactory(group=group)
        Candidate.objects.filter(pk=c.pk).update(started_at=now - dt.timedelta(minutes=5),
                                                 finished_at=now - dt.timedelta(minutes=5) + dt.timedelta(seconds=30 * (i + 1)))
    res = client.get("/research/rounds/new/preview/", {"seeds_per_prompt": "4", "search": "kite"}).content.decode()
    assert "3 prompts × 4 seeds = 12 videos" in res and "about 6 min" in res and "2.0 videos/min" in res
    res = client.get("/research/rounds/new/preview/", {"search": "zebra"}).content.decode()
    assert "No prompt matches this filter" in res
    assert client.get("/research/rounds/new/preview/", {"seeds_per_prompt": "x", "sample_size": "-3"}).status_code == 200


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_preview_is_live_in_the_browser(page, live_server):
    ensure_default_data()  # roles: an earlier transactional test's flush removed migration 0002's rows
    user = user_create(username="res2", password="pw-research-1", roles=["researcher"])
    make_prompts(3, word="kite")
    make_prompts(2, word="boat")
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME,
                               "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                               "url": live_server.url}])
    previews: list[str] = []
    page.on("request", lambda r: previews.append(r.url) if "/rounds/new/preview/" in r.url else None)
    page.goto(f"{live_server.url}/research/rounds/new/")
    assert "5 prompts × 4 seeds = 20 videos" in page.inner_text("#round-preview")
    page.fill("input[name=search]", "boat")
    page.wait_for_function("() => document.querySelector('#round-preview').textContent.includes('2 prompts')")
    page.fill("input[name=seeds_per_prompt]", "3")
    page.dispatch_event("input[name=seeds_per_prompt]", "change")
    page.wait_for_function("() => document.querySelector('#round-preview').textContent.includes('= 6 videos')")
    assert previews and not any("csrfmiddlewaretoken" in u for u in previews)  # the token stays out of URLs and logs
