"""Fixtures for the generation tests: a tiny model root, rows of a tiny round, and the broker switch."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

WORKER_SETTINGS = "tests.generation_workers.worker_settings"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    from model.tiny import write_tiny_checkpoint

    return Path(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-root"), seed=0))


@pytest.fixture
def make_round(tiny_root):
    """Factory: a tiny round (smallest size, few steps) with ``n_prompts`` prompts in ``config['prompt_ids']``."""
    from annotation.models import Checkpoint, Prompt, Round

    def make(*, n_prompts: int = 2, seeds: int = 3, uri: str | None = None, preset: str = "tiny", **fields) -> Round:
        tag = uuid.uuid4().hex[:8]
        checkpoint = Checkpoint.objects.create(name=f"tiny-{tag}", uri=str(uri or tiny_root), preset=preset)
        prompts = [
            Prompt.objects.create(text=f"prompt {i} {tag}: a red ball rolls on grass", text_hash=f"{tag}-{i}")
            for i in range(n_prompts)
        ]
        values = dict(
            name=f"round-{tag}", policy_checkpoint=checkpoint, preset=preset, num_steps=2, cfg_scale=5.0, shift=13.0,
            height=32, width=32, num_frames=17, fps=8, seeds_per_prompt=seeds, base_seed=100,
            config={"prompt_ids": [p.id for p in prompts]},
        )
        values.update(fields)
        return Round.objects.create(**values)

    return make


@pytest.fixture
def no_dispatch(monkeypatch):
    """Capture what the services would enqueue instead of sending it."""
    sent: list[list[int]] = []
    monkeypatch.setattr("annotation.services.dispatch.generation_dispatch", lambda batches: sent.extend(batches))
    return sent


@pytest.fixture
def fast_settings(settings, tmp_path):
    settings.VIDEODPO = {**settings.VIDEODPO, "X264_PRESET": "veryfast", "MODEL_CACHE_DIR": str(tmp_path / "model-cache")}
    return settings


def _reset_producer_pool(app) -> None:
    """Forget the app's broker connections (kombu keeps pools in a global registry keyed by connection)."""
    from kombu import pools

    pools.reset()  # closes and drops every registered pool, so the next publish connects afresh
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


@pytest.fixture(params=["configured", "embedded"])
def broker(request, tmp_path, monkeypatch):
    """Run a worker test on both brokers: the configured one (Redis when ``CELERY_BROKER_URL`` is set) and the
    embedded filesystem transport. Yields the ``extra_env`` for ``start_worker``; for the embedded case this
    process's Celery app publishes into the same broker folder as the worker."""
    from webapp.celery import app
    from webapp.embedded import embedded_broker

    env = {"DJANGO_SETTINGS_MODULE": WORKER_SETTINGS}
    if request.param == "configured":
        if not os.environ.get("CELERY_BROKER_URL"):
            pytest.skip("CELERY_BROKER_URL is unset: the embedded transport runs in the other parametrization")
        yield env
        return
    folder = tmp_path / "broker"
    # Celery reads the CELERY_BROKER_URL environment variable before its configuration: blank it here too
    monkeypatch.setenv("CELERY_BROKER_URL", "")
    monkeypatch.setenv("VIDEODPO_BROKER_DIR", str(folder))
    url, options = embedded_broker(Path("/nonexistent"))  # the folder comes from VIDEODPO_BROKER_DIR
    old = (app.conf.broker_url, app.conf.broker_transport_options)
    _reset_producer_pool(app)
    app.conf.broker_url, app.conf.broker_transport_options = url, options
    assert app.connection_for_write().transport_cls == "filesystem"
    try:
        yield {**env, "CELERY_BROKER_URL": "", "VIDEODPO_BROKER_DIR": str(folder)}
    finally:
        _reset_producer_pool(app)
        app.conf.broker_url, app.conf.broker_transport_options = old
