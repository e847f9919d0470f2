"""Live pages stay live (issue 18 item 11): the round's actions, progress and history refresh together and cancel
buttons go once nothing can be cancelled; DPO runs show durations and an ETA, and the "queued" flash goes once the
run is done (in Chromium)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from annotation.models import CandidateGroup, DPORun, Round
from annotation.services.round_states import round_transition
from tests.annotation.factories import ensure_default_data
from tests.exports.factories import build_loop

pytestmark = pytest.mark.django_db


def test_round_actions_and_history_follow_the_status(client):
    loop = build_loop(n_prompts=1)
    client.force_login(loop.researcher)
    rnd = Round.objects.create(name="live-r", policy_checkpoint=loop.base, num_steps=2, cfg_scale=1, shift=1, height=16,
                               width=16, num_frames=4, fps=25, status=Round.Status.GENERATING)
    url = f"/research/rounds/{rnd.pk}/"
    assert 'id="round-cancel"' in client.get(url, HTTP_HX_REQUEST="true").content.decode()
    round_transition(round_id=rnd.pk, to_status=Round.Status.ANNOTATING)
    partial = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="round-cancel"' not in partial and "generating → annotating" in partial  # history without reload
    CandidateGroup.objects.filter(round=loop.gen_round).update(status=CandidateGroup.Status.DONE)
    done = client.get(f"/research/rounds/{loop.gen_round.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert 'id="round-next"' in done and "waits for a DPO run" in done  # says why it does not move on


def test_dpo_run_page_shows_duration_eta_and_hides_cancel_when_finished(client):
    loop = build_loop(n_prompts=1)
    client.force_login(loop.researcher)
    now = timezone.now()
    run = DPORun.objects.create(name="live-run", init_checkpoint=loop.base, reference_checkpoint=loop.base,
                                status=DPORun.Status.RUNNING, progress_step=5, progress_total=10,
                                started_at=now - dt.timedelta(seconds=100))
    page = client.get(f"/research/dpo-runs/{run.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "running for 1 min 40 s" in page and "about 1 min 40 s left" in page and 'id="run-cancel"' in page
    DPORun.objects.filter(pk=run.pk).update(status=DPORun.Status.DONE, progress_step=10, finished_at=now)
    page = client.get(f"/research/dpo-runs/{run.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "took 1 min 40 s" in page and 'id="run-cancel"' not in page and 'hx-swap-oob="true"' in page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_queued_flash_goes_when_the_run_is_done(page, live_server, monkeypatch):
    monkeypatch.setattr("annotation.services.candidates.checkpoint_validate", lambda checkpoint: None)
    monkeypatch.setattr("annotation.services.dispatch.dpo_run_dispatch_on_commit", lambda run_id: None)
    ensure_default_data()  # roles: an earlier transactional test's flush removed migration 0002's rows
    loop = build_loop(n_prompts=2)
    client = Client()
    client.force_login(loop.researcher)
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME,
                               "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                               "url": live_server.url}])
    page.goto(f"{live_server.url}/research/dpo-runs/new/?round={loop.gen_round.pk}")
    page.fill("input[name=name]", "flash-run")
    page.click("#dpo-run-form button[type=submit]")
    page.wait_for_selector("#messages li")
    assert "queued" in page.inner_text("#messages") and page.is_visible("#run-cancel")
    DPORun.objects.filter(name="flash-run").update(status=DPORun.Status.DONE, started_at=timezone.now(),
                                                   finished_at=timezone.now())
    page.wait_for_function("() => !document.querySelector('#messages li') && !document.querySelector('#run-cancel')",
                           timeout=15_000)
    assert "took" in page.inner_text("#run-timing")
