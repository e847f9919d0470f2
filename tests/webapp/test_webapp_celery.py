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
