"""Every job the domain sends to a worker, by task name: the domain never imports the worker packages (dependencies
point one way: the workers call the annotation services; the services only send messages).

Jobs are sent once the surrounding transaction commits (the worker must see the rows), at once outside one.

- Generation (queue ``gpu``): one ``candidates_generate`` job per batch of candidate ids; with
  ``VIDEODPO["SPLIT_QUEUES"]`` a chain ``candidates_text_encode`` (``text``) -> ``candidates_sample`` (``gpu``) ->
  ``candidates_decode`` (``vae``) whose stages hand over through storage, never through ``.get()``.
- Training (queue ``train``): a DPO run; a reward-model run; the average of several checkpoints.
- Exports (queue ``default``): one export.
- Prompt imports too big for a request (queue ``default``): one import job.
"""

from __future__ import annotations

from celery import chain, current_app
from django.db import transaction

from annotation.conf import videodpo

QUEUE_DEFAULT, QUEUE_GPU, QUEUE_TEXT, QUEUE_VAE, QUEUE_TRAIN = "default", "gpu", "text", "vae", "train"

TASK_CANDIDATES_GENERATE = "generation_workers.tasks.candidates_generate"
TASK_CANDIDATES_TEXT_ENCODE = "generation_workers.tasks.candidates_text_encode"
TASK_CANDIDATES_SAMPLE = "generation_workers.tasks.candidates_sample"
TASK_CANDIDATES_DECODE = "generation_workers.tasks.candidates_decode"
TASK_DPO_RUN_EXECUTE = "generation_workers.tasks.dpo_run_execute"
TASK_CHECKPOINT_AVERAGE = "generation_workers.tasks.checkpoint_average_run"
TASK_REWARD_RUN_EXECUTE = "generation_workers.tasks.reward_run_execute"
TASK_REWARD_SCORES = "generation_workers.tasks.reward_scores_round"
TASK_EXPORT_RUN = "annotation.tasks_exports.export_run"
TASK_PROMPT_IMPORT_RUN = "annotation.tasks.prompt_import_run"


def _job(name: str, *args, queue: str, immutable: bool = True):
    return current_app.signature(name, args=args, queue=queue, immutable=immutable)


def _send_on_commit(signature) -> None:
    transaction.on_commit(signature.apply_async)


# -- generation -------------------------------------------------------------------------------------------------------
def generation_signature(candidate_ids: list[int]):
    """The Celery signature (task or chain) that generates one batch of candidates."""
    ids = [int(i) for i in candidate_ids]
    if not videodpo().split_queues:
        return _job(TASK_CANDIDATES_GENERATE, ids, queue=QUEUE_GPU)
    return chain(
        _job(TASK_CANDIDATES_TEXT_ENCODE, ids, queue=QUEUE_TEXT),
        _job(TASK_CANDIDATES_SAMPLE, ids, queue=QUEUE_GPU),
        _job(TASK_CANDIDATES_DECODE, queue=QUEUE_VAE, immutable=False),  # gets the ids the sample stage sampled
    )


def generation_dispatch(batches: list[list[int]]) -> None:
    """Send now (use :func:`generation_dispatch_on_commit` inside a transaction)."""
    for ids in batches:
        if ids:
            generation_signature(ids).apply_async()


def generation_dispatch_on_commit(batches: list[list[int]]) -> None:
    batches = [list(b) for b in batches if b]
    if batches:
        transaction.on_commit(lambda: generation_dispatch(batches))


# -- training ---------------------------------------------------------------------------------------------------------
def dpo_run_dispatch_on_commit(*, run_id: int) -> None:
    _send_on_commit(_job(TASK_DPO_RUN_EXECUTE, int(run_id), queue=QUEUE_TRAIN))


def reward_run_dispatch_on_commit(*, run_id: int) -> None:
    _send_on_commit(_job(TASK_REWARD_RUN_EXECUTE, int(run_id), queue=QUEUE_TRAIN))


def reward_scores_dispatch_on_commit(*, run_id: int, round_id: int) -> None:
    _send_on_commit(_job(TASK_REWARD_SCORES, int(run_id), int(round_id), queue=QUEUE_TRAIN))


def checkpoint_average_dispatch_on_commit(*, checkpoint_ids: list[int], name: str, actor_id: int | None) -> None:
    _send_on_commit(_job(TASK_CHECKPOINT_AVERAGE, [int(i) for i in checkpoint_ids], name, actor_id, queue=QUEUE_TRAIN))


# -- exports ----------------------------------------------------------------------------------------------------------
def export_run_dispatch_on_commit(*, export_id: int) -> None:
    _send_on_commit(_job(TASK_EXPORT_RUN, int(export_id), queue=QUEUE_DEFAULT))


# -- prompt imports ---------------------------------------------------------------------------------------------------
def prompt_import_dispatch_on_commit(*, import_id: int) -> None:
    _send_on_commit(_job(TASK_PROMPT_IMPORT_RUN, int(import_id), queue=QUEUE_DEFAULT))
