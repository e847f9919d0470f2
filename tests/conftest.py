"""Shared fixtures: real services only.

- ``s3_server``: a ``moto_server`` process (S3-compatible) on a free loopback port; ``s3_storage`` switches the app's
  storage to it for one test.
- ``celery_worker``: a real ``celery worker`` process on the configured broker (Redis/RabbitMQ when
  ``CELERY_BROKER_URL`` is set, else the embedded filesystem transport) and the test database.
- Browser tests use pytest-playwright's ``page`` with Debian's Chromium (``executable_path``); without a browser they
  are skipped with a reason, except under ``CI=true`` where that fails the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in the test thread; the ORM calls around it are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


# -- Reference data ----------------------------------------------------------------------------------------------------
_DB_FIXTURES = ("transactional_db", "db", "django_db_reset_sequences", "django_db_serialized_rollback")


@pytest.fixture(autouse=True)
def reference_data(request):
    """Every database test starts with the reference data of migration 0002 (role groups, categories, flaw tags).

    A transactional test (``live_server``, a real worker) ends with a flush that removes those rows; without this, the
    tests that run after it would see researchers refused ("Only researchers can do this") depending on test order.
    Idempotent and cheap (get_or_create), inside the test's own transaction for non-transactional tests."""
    if request.node.get_closest_marker("django_db") is not None:
        request.getfixturevalue("_django_db_helper")
    else:
        names = [name for name in _DB_FIXTURES if name in request.fixturenames]
        if not names:
            return
        request.getfixturevalue(names[0])
    from annotation.services.reference_data import reference_data_ensure

    reference_data_ensure()


def _transactional(item) -> tuple[bool, bool]:
    """(whether the test ran on a transactional database, whether with serialized rollback)."""
    marker = item.get_closest_marker("django_db")
    names = getattr(item, "fixturenames", ())
    transactional = bool(marker and marker.kwargs.get("transaction")) or any(
        name in names for name in ("transactional_db", "live_server", "django_db_serialized_rollback"))
    serialized = bool(marker and marker.kwargs.get("serialized_rollback")) or "django_db_serialized_rollback" in names
    return transactional, serialized


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After a transactional test without serialized rollback: the migrated rows again, with their own ids.

    Its closing flush runs ``post_migrate``, which writes the content types and permissions again under new ids; a
    later ``serialized_rollback`` test then loads the migration snapshot's rows under their old ids into that table
    and fails on the (app_label, model) unique key, depending on test order. Here those recreated rows give way to
    the snapshot's (the same rows, their first ids), so both kinds of tests find the database as migrated."""
    yield
    transactional, serialized = _transactional(item)
    if not transactional or serialized:
        return
    from django.db import connection
    from pytest_django.plugin import blocking_manager_key

    snapshot = getattr(connection, "_test_serialized_contents", None)
    if not snapshot:
        return
    with item.config.stash[blocking_manager_key].unblock():
        from django.contrib.auth.models import Permission
        from django.contrib.contenttypes.models import ContentType

        Permission.objects.all().delete()
        ContentType.objects.all().delete()
        connection.creation.deserialize_db_from_string(snapshot)
        ContentType.objects.clear_cache()


# -- S3 ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on a free port; yields its endpoint URL and credentials."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        yield {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "access_key": "testing",
            "secret_key": "testing",
            "region_name": "us-east-1",
        }
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3_bucket(s3_server):
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint_url"],
        aws_access_key_id=s3_server["access_key"],
        aws_secret_access_key=s3_server["secret_key"],
        region_name=s3_server["region_name"],
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_env(s3_server, s3_bucket) -> dict[str, str]:
    """The environment variables that point a process (worker, trainer) at the test bucket."""
    return {
        "STORAGE_BACKEND": "s3",
        "AWS_STORAGE_BUCKET_NAME": s3_bucket,
        "AWS_S3_ENDPOINT_URL": s3_server["endpoint_url"],
        "AWS_ACCESS_KEY_ID": s3_server["access_key"],
        "AWS_SECRET_ACCESS_KEY": s3_server["secret_key"],
        "AWS_S3_REGION_NAME": s3_server["region_name"],
    }


@pytest.fixture
def s3_storage(settings, s3_server, s3_bucket, s3_env, monkeypatch):
    """Switch this test's storage (and the env its child processes inherit) to the S3-compatible server."""
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    settings.STORAGE_BACKEND = "s3"
    settings.AWS_STORAGE_BUCKET_NAME = s3_bucket
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": s3_bucket,
                "endpoint_url": s3_server["endpoint_url"],
                "access_key": s3_server["access_key"],
                "secret_key": s3_server["secret_key"],
                "region_name": s3_server["region_name"],
                "querystring_auth": True,
                "querystring_expire": 600,
                "file_overwrite": True,
                "signature_version": "s3v4",
            },
        },
    }
    return s3_bucket


@pytest.fixture
def sent_tasks(monkeypatch):
    """What the app sends to the broker, as (task name, args, queue), instead of sending it."""
    from webapp.celery import app

    sent: list[tuple[str, tuple, str | None]] = []

    def send_task(name, args=None, kwargs=None, **options):
        sent.append((name, tuple(args or ()), options.get("queue")))

    monkeypatch.setattr(app, "send_task", send_task)
    return sent


# -- Celery worker -----------------------------------------------------------------------------------------------------
class WorkerProcess:
    """A real ``celery worker`` child process; ``kill()`` sends SIGKILL (a worker dying mid-job)."""

    def __init__(self, env: dict[str, str], queues: str, log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queues, "--pool=solo",
             "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"test-{uuid.uuid4().hex[:8]}@%h"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited ({self.proc.returncode}):\n{self.log_path.read_text()[-4000:]}")
            if "ready." in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"celery worker not ready after {timeout} s:\n{self.log_path.read_text()[-4000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.fixture
def child_env():
    """Factory: the environment for a child process (worker, producer, CLI) that uses this test's database."""
    from django.db import connection

    from webapp.env import database_url_from_settings

    def make(extra_env: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["DJANGO_SETTINGS_MODULE"] = "webapp.settings.test"
        env["DATABASE_URL"] = database_url_from_settings(connection.settings_dict)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra_env or {})
        return env

    return make


@pytest.fixture
def start_worker(tmp_path, child_env):
    """Factory: ``start_worker(queues="default,gpu,train", extra_env={...})`` -> a ready WorkerProcess on the test DB.

    Use with ``@pytest.mark.django_db(transaction=True)`` so the worker sees committed rows."""
    from django.conf import settings

    workers: list[WorkerProcess] = []

    def start(queues: str = "default,gpu,train", extra_env: dict[str, str] | None = None, wait: bool = True):
        worker = WorkerProcess(child_env(extra_env), queues, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    assert settings.CELERY_BROKER_URL
    # messages left by an earlier test (a killed worker's unacked job, a task whose worker was stopped) would be
    # delivered to this test's workers and name rows that this test never created: start from empty queues
    from webapp.celery import app

    app.control.purge()
    yield start
    for worker in workers:
        worker.stop()


# -- Browser -----------------------------------------------------------------------------------------------------------
def chromium_executable() -> str | None:
    candidates = [os.environ.get("PLAYWRIGHT_CHROMIUM_EXECUTABLE"), "/usr/bin/chromium", shutil.which("chromium"),
                  shutil.which("chromium-browser"), shutil.which("google-chrome")]
    return next((c for c in candidates if c and Path(c).exists()), None)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright hook: launch Debian's Chromium (Playwright cannot download its own browser here)."""
    exe = chromium_executable()
    if exe is None:
        reason = "no Chromium found (install Debian's chromium or set PLAYWRIGHT_CHROMIUM_EXECUTABLE)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    return {
        **browser_type_launch_args,
        "executable_path": exe,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"],
    }


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# -- a tiny random video language model ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """A random Qwen2-VL folder (``tests.dpo.test_reward_vlm.write_tiny_vlm``), written once per session: the VLM
    reward model's tests in dpo/ and in the app share it."""
    from tests.dpo.test_reward_vlm import write_tiny_vlm

    root = tmp_path_factory.mktemp("tiny-vlm")
    write_tiny_vlm(root)
    return root
