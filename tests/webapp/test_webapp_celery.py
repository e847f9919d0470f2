"""Celery round trip through a real worker process, on Redis (when configured) and on the embedded transport."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from annotation.tasks import ping

PRODUCER = (
    "import django, json; django.setup(); from annotation.tasks import ping; "
    "print(json.dumps(ping.delay('hello').get(timeout=60)))"
)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_round_trip_on_configured_broker(start_worker):
    if not os.environ.get("CELERY_BROKER_URL"):
        pytest.skip("CELERY_BROKER_URL is unset: the embedded transport is covered by the next test")
    worker = start_worker(queues="default")
    assert ping.delay("hello").get(timeout=60) == {"pong": "hello", "database": connection.settings_dict["NAME"]}
    worker.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_round_trip_on_embedded_filesystem_transport(start_worker, child_env, tmp_path):
    """Producer and worker are both separate processes sharing the embedded broker's folder (no server)."""
    embedded = {"CELERY_BROKER_URL": "", "VIDEODPO_BROKER_DIR": str(tmp_path / "broker")}
    worker = start_worker(queues="default", extra_env=embedded)
    env = child_env(embedded)
    result = subprocess.run([sys.executable, "-c", PRODUCER], cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"pong": "hello", "database": connection.settings_dict["NAME"]}
    assert os.listdir(tmp_path / "broker" / "queue") == []  # consumed
    worker.stop()


def test_every_job_the_domain_sends_by_name_is_a_registered_task_routed_to_its_queue():
    """annotation/services/dispatch.py names tasks it does not import: each name must exist in the worker's app, and
    the routes (for jobs sent by hand) put training on ``train``, generation on ``gpu`` (the split chain's stages get
    ``text``/``vae`` from the dispatcher) and exports on ``default``."""
    from annotation.services import dispatch
    from webapp.celery import app

    app.loader.import_default_modules()  # what a worker imports at start (autodiscovery + CELERY_IMPORTS)
    expected = {
        dispatch.TASK_CANDIDATES_GENERATE: dispatch.QUEUE_GPU, dispatch.TASK_CANDIDATES_TEXT_ENCODE: dispatch.QUEUE_GPU,
        dispatch.TASK_CANDIDATES_SAMPLE: dispatch.QUEUE_GPU, dispatch.TASK_CANDIDATES_DECODE: dispatch.QUEUE_GPU,
        dispatch.TASK_DPO_RUN_EXECUTE: dispatch.QUEUE_TRAIN, dispatch.TASK_CHECKPOINT_AVERAGE: dispatch.QUEUE_TRAIN,
        dispatch.TASK_REWARD_RUN_EXECUTE: dispatch.QUEUE_TRAIN, dispatch.TASK_REWARD_SCORES: dispatch.QUEUE_TRAIN,
        dispatch.TASK_EXPORT_RUN: dispatch.QUEUE_DEFAULT, dispatch.TASK_PROMPT_IMPORT_RUN: dispatch.QUEUE_DEFAULT,
    }
    names = {v for k, v in vars(dispatch).items() if k.startswith("TASK_")}
    assert names == set(expected)
    for name, queue in expected.items():
        assert name in app.tasks, name
        route = app.amqp.router.route({}, name)
        assert route["queue"].name == queue, (name, route["queue"].name)
