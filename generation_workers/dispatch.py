"""How a batch of candidate ids becomes Celery messages (called from ``annotation.services.candidates``).

- Default: one ``candidates_generate`` job on the ``gpu`` queue (text encoding, sampling, decoding, encoding in one
  process, one loaded pipeline).
- ``VIDEODPO_SPLIT_QUEUES`` (setting, or ``VIDEODPO["SPLIT_QUEUES"]``): a chain ``candidates_text_encode`` (queue
  ``text``) -> ``candidates_sample`` (``gpu``) -> ``candidates_decode`` (``vae``); stages hand over through storage
  (the prompt's text embeddings, the candidate's latent), never through ``.get()``.
"""

from __future__ import annotations

from celery import chain
from django.conf import settings
from django.db import transaction

QUEUE_GPU, QUEUE_TEXT, QUEUE_VAE = "gpu", "text", "vae"


def split_queues() -> bool:
    explicit = getattr(settings, "VIDEODPO_SPLIT_QUEUES", None)
    if explicit is not None:
        return bool(explicit)
    return bool((getattr(settings, "VIDEODPO", {}) or {}).get("SPLIT_QUEUES", False))


def generation_signature(candidate_ids: list[int]):
    """The Celery signature (task or chain) that generates one batch of candidates."""
    from generation_workers import tasks

    ids = [int(i) for i in candidate_ids]
    if not split_queues():
        return tasks.candidates_generate.si(ids).set(queue=QUEUE_GPU)
    return chain(
        tasks.candidates_text_encode.si(ids).set(queue=QUEUE_TEXT),
        tasks.candidates_sample.si(ids).set(queue=QUEUE_GPU),
        tasks.candidates_decode.s().set(queue=QUEUE_VAE),  # gets the ids the sample stage sampled
    )


def generation_dispatch(batches: list[list[int]]) -> None:
    """Send now (use :func:`generation_dispatch_on_commit` inside a transaction)."""
    for ids in batches:
        if ids:
            generation_signature(ids).apply_async()


def generation_dispatch_on_commit(batches: list[list[int]]) -> None:
    """Send once the current transaction commits (the worker must see the rows); at once outside a transaction."""
    batches = [list(b) for b in batches if b]
    if batches:
        transaction.on_commit(lambda: generation_dispatch(batches))
