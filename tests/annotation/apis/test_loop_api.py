"""The loop without the browser (issue 18 item 15): a token, then rounds, DPO runs, checkpoints and evaluations
through the API (create, status, cancel, list) and the ``rounds`` command; notifications by e-mail and webhook when
a round is ready and when a run ends."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import StringIO
from pathlib import Path

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from annotation.models import Checkpoint, DPORun, Prompt, Round
from annotation.services.accounts import user_create
from annotation.services.dpo_runs import dpo_run_finish
from annotation.services.round_states import round_transition
from tests.exports.factories import build_loop

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    from model.tiny import write_tiny_checkpoint

    return Path(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-root-api"), seed=0))


@pytest.fixture
def api(db):
    user_create(username="res", password="pw-research-1", roles=["researcher"])
    client = APIClient()
    token = client.post("/api/auth/token/", {"username": "res", "password": "pw-research-1"}, format="json")
    assert token.status_code == 201, token.content
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    return client


@pytest.fixture
def tiny_checkpoint(db, tiny_root):
    return Checkpoint.objects.create(name="tiny-base", uri=str(tiny_root), preset="tiny")


def prompts(n: int, category=None) -> list[int]:
    return [Prompt.objects.create(text=f"a kite over the sea, take {i}", text_hash=f"kite-{i}", category=category).pk
            for i in range(n)]


def test_rounds_create_status_list_cancel_through_the_api(api, tiny_checkpoint, sent_tasks,
                                                          django_capture_on_commit_callbacks):
    ids = prompts(2)
    with django_capture_on_commit_callbacks(execute=True):
        res = api.post("/api/rounds/create/", {"name": "api-round", "checkpoint": tiny_checkpoint.pk,
                                               "prompt_ids": ids, "seeds_per_prompt": 2, "annotators_per_group": 1,
                                               "aspect_judgments": True},
                       format="json")
    assert res.status_code == 201, res.content
    body = res.json()
    assert Round.objects.get(pk=body["id"]).aspect_judgments
    assert body["status"] == "generating" and body["candidates"]["queued"] == 4 and body["annotators_per_group"] == 1
    assert sent_tasks  # generation queued on the broker
    assert api.get(f"/api/rounds/{body['id']}/").json()["name"] == "api-round"
    assert [r["name"] for r in api.get("/api/rounds/").json()["results"]] == ["api-round"]
    res = api.post(f"/api/rounds/{body['id']}/cancel/")
    assert res.status_code == 200 and res.json()["status"] == "cancelled"
    res = api.post(f"/api/rounds/{body['id']}/cancel/")
    assert res.status_code == 409 and "only a draft or generating round" in res.json()["detail"]
    # refusals in users' words, never a 500
    res = api.post("/api/rounds/create/", {"name": "r2", "checkpoint": tiny_checkpoint.pk, "search": "no such words"},
                   format="json")
    assert res.status_code == 400 and "No active prompt matches this filter" in res.json()["detail"]
    assert api.post("/api/rounds/create/", {"name": "r3", "checkpoint": 999999, "prompt_ids": ids},
                    format="json").status_code == 404
    assert api.post("/api/rounds/create/", {"name": "r4", "checkpoint": "x"}, format="json").status_code == 400
    assert api.get("/api/rounds/999999/").status_code == 404


def test_dpo_runs_and_evaluation_through_the_api(api, tiny_root, sent_tasks, django_capture_on_commit_callbacks):
    loop = build_loop(n_prompts=4)
    Checkpoint.objects.filter(pk__in=[loop.base.pk, loop.dpo.pk]).update(uri=str(tiny_root), preset="tiny")
    with django_capture_on_commit_callbacks(execute=True):
        res = api.post("/api/dpo-runs/create/", {"name": "api-run", "round_ids": [loop.gen_round.pk],
                                                 "init_checkpoint": loop.base.pk}, format="json")
    assert res.status_code == 201, res.content
    run = res.json()
    assert run["status"] == "queued" and run["pairs_count"] > 0 and run["data_rounds"] == [loop.gen_round.pk]
    assert ("generation_workers.tasks.dpo_run_execute", (run["id"],), "train") in sent_tasks
    assert [r["name"] for r in api.get("/api/dpo-runs/").json()["results"]] == ["api-run"]
    res = api.post(f"/api/dpo-runs/{run['id']}/cancel/")
    assert res.status_code == 200 and res.json()["status"] == "cancelled" and res.json()["finished"]
    assert api.post(f"/api/dpo-runs/{run['id']}/cancel/").status_code == 400
    assert api.post("/api/dpo-runs/create/", {"name": "x", "round_ids": [], "init_checkpoint": loop.base.pk},
                    format="json").status_code == 400
    names = {c["name"] for c in api.get("/api/checkpoints/").json()["results"]}
    assert {"base-v1", "dpo-r1"} <= names
    assert api.get(f"/api/checkpoints/{loop.dpo.pk}/").json()["kind"] == "dpo"
    # an evaluation round of the DPO checkpoint against its reference on held-out prompts
    Checkpoint.objects.filter(pk=loop.dpo.pk).update(reference=loop.base)
    res = api.post(f"/api/checkpoints/{loop.dpo.pk}/evaluate/", {"name": "api-eval"}, format="json")
    assert res.status_code == 400 and "held-out" in res.json()["detail"]
    Prompt.objects.filter(pk__in=prompts(2)).update(is_held_out=True)
    with django_capture_on_commit_callbacks(execute=True):
        res = api.post(f"/api/checkpoints/{loop.dpo.pk}/evaluate/", {"name": "api-eval"}, format="json")
    assert res.status_code == 201, res.content
    assert res.json()["kind"] == "evaluation" and res.json()["reference_checkpoint"] == loop.base.pk


def test_only_researchers_use_the_loop_api(db):
    user_create(username="ann", password="pw-annot-1", roles=["annotator"])
    client = APIClient()
    token = client.post("/api/auth/token/", {"username": "ann", "password": "pw-annot-1"}, format="json").json()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token['token']}")
    for url in ("/api/rounds/", "/api/dpo-runs/", "/api/checkpoints/"):
        assert client.get(url).status_code == 403
    assert APIClient().get("/api/rounds/").status_code == 401


def test_rounds_command_scripts_the_loop(tiny_checkpoint, sent_tasks, django_capture_on_commit_callbacks):
    ids = prompts(2)

    def run(*args) -> dict:
        out = StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("rounds", *args, stdout=out, stderr=StringIO())
        return json.loads(out.getvalue())

    created = run("create", "--name", "cli-round", "--checkpoint", str(tiny_checkpoint.pk),
                  "--prompt-ids", ",".join(map(str, ids)), "--seeds", "2", "--annotators", "1")
    assert created["status"] == "generating" and created["candidates"]["queued"] == 4
    assert run("status", str(created["id"]))["name"] == "cli-round"
    assert [r["id"] for r in run("list")["results"]] == [created["id"]]
    with pytest.raises(CommandError, match="still generating"):
        run("wait", str(created["id"]), "--timeout", "0", "--every", "0")
    Round.objects.filter(pk=created["id"]).update(status=Round.Status.ANNOTATING)
    assert run("wait", str(created["id"]), "--timeout", "5")["status"] == "annotating"
    assert {c["name"] for c in run("checkpoints")["results"]} == {"tiny-base"}
    with pytest.raises(CommandError, match="No active prompt matches"):
        run("create", "--name", "empty", "--checkpoint", str(tiny_checkpoint.pk), "--search", "zzz-none")
    with pytest.raises(CommandError, match="overrides"):
        run("train", "--name", "t", "--rounds", str(created["id"]), "--checkpoint", str(tiny_checkpoint.pk),
            "--overrides", "[1]")


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_notifications_by_email_and_webhook_when_a_round_is_ready_and_a_run_ends(settings, tiny_root,
                                                                                  django_capture_on_commit_callbacks):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    settings.VIDEODPO_NOTIFY_EMAILS = "lab@example.org, pi@example.org"
    settings.VIDEODPO_NOTIFY_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
    try:
        loop = build_loop(n_prompts=2)
        rnd = Round.objects.create(name="notify-me", policy_checkpoint=loop.base, status=Round.Status.GENERATING,
                                   num_steps=2, cfg_scale=1, shift=1, height=16, width=16, num_frames=4, fps=25)
        with django_capture_on_commit_callbacks(execute=True):
            round_transition(round_id=rnd.pk, to_status=Round.Status.ANNOTATING)
        assert [m.subject for m in mail.outbox] == ["[Video-DPO] Round notify-me is ready for annotation"]
        assert mail.outbox[0].to == ["lab@example.org", "pi@example.org"]
        assert _Hook.received[-1]["event"] == "round.ready" and _Hook.received[-1]["round"]["id"] == rnd.pk
        run = DPORun.objects.create(name="notify-run", init_checkpoint=loop.base, reference_checkpoint=loop.base)
        with django_capture_on_commit_callbacks(execute=True):
            DPORun.objects.filter(pk=run.pk).update(status=DPORun.Status.RUNNING)
            dpo_run_finish(run_id=run.pk, status=DPORun.Status.FAILED, error="loss is NaN")
            dpo_run_finish(run_id=run.pk, status=DPORun.Status.FAILED, error="again")  # idempotent: no 2nd mail
        assert [m.subject for m in mail.outbox][1:] == ["[Video-DPO] DPO run notify-run failed"]
        assert "loss is NaN" in mail.outbox[1].body
        assert [h["event"] for h in _Hook.received] == ["round.ready", "dpo_run.failed"]
        # a webhook that does not answer never breaks a transition
        settings.VIDEODPO_NOTIFY_WEBHOOK_URL = "http://127.0.0.1:9/unreachable"
        with django_capture_on_commit_callbacks(execute=True):
            round_transition(round_id=rnd.pk, to_status=Round.Status.TRAINING)
        assert Round.objects.get(pk=rnd.pk).status == Round.Status.TRAINING
    finally:
        server.shutdown()
