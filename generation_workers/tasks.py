"""Celery tasks of the workers: generation (queues ``gpu``/``text``/``vae``) and training (queue ``train``, see
``training.py``). The domain sends them by name (``annotation.services.dispatch``). Each takes ids, re-reads the rows,
and is idempotent: a candidate that is ready,
failed, cancelled or held by a live worker is skipped, and every object key is deterministic, so a redelivered or
redone job (``acks_late``; a SIGKILLed worker) overwrites its own objects and creates nothing twice.

Retries: only transient errors (``generation_workers.errors.is_transient``) with exponential backoff; anything else
fails the job's candidates at once with the error. Torch and the model are imported lazily (the web process imports
this module through autodiscovery).
"""

from __future__ import annotations

import logging
import random
import traceback

from celery import shared_task
from celery.signals import worker_ready

from annotation.services import candidates as candidate_services
from generation_workers import training

logger = logging.getLogger(__name__)

MAX_RETRIES = 5
TASK_OPTIONS = {"bind": True, "acks_late": True, "max_retries": MAX_RETRIES}


def retry_countdown(retries: int, *, base: float = 2.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**retries))."""
    return random.uniform(0, min(cap, base * (2**retries))) + 0.5


class _Held:
    """The candidates a job has taken (marked running), for failure and retry bookkeeping."""

    def __init__(self):
        self.ids: list[int] = []


def _run(task, candidate_ids: list[int], body) -> dict:
    """Run ``body(held)``; on error: retry transient ones (candidates back to ``queued``), fail the rest."""
    from generation_workers.errors import CandidateCancelled, is_transient

    held = _Held()
    try:
        return body(held)
    except CandidateCancelled as exc:
        logger.info("job %s stopped: %s", candidate_ids, exc)
        return {"cancelled": held.ids}
    except Exception as exc:
        if is_transient(exc) and task.request.retries < task.max_retries:
            for cid in held.ids:
                candidate_services.candidate_requeue(candidate_id=cid, error=f"retrying after: {exc!r}")
            countdown = retry_countdown(task.request.retries)
            logger.warning("job %s: transient %r, retry %d in %.1fs", candidate_ids, exc, task.request.retries + 1, countdown)
            raise task.retry(exc=exc, countdown=countdown) from exc
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if task.request.retries:
            message += f" (after {task.request.retries} retries)"
        for cid in held.ids or candidate_ids:
            candidate_services.candidate_mark_failed(candidate_id=cid, error=message)
        raise


def _take(job, held: _Held) -> list:
    """Mark the job's candidates running (those this worker may take) and return them."""
    taken = [c for c in job.candidates
             if candidate_services.candidate_mark_running(candidate_id=c.id, total_steps=job.round.num_steps)]
    held.ids = [c.id for c in taken]
    return taken


@shared_task(name="generation_workers.tasks.candidates_generate", **TASK_OPTIONS)
def candidates_generate(self, candidate_ids: list[int]) -> dict:
    """Generate one prompt's candidates (one or K seeds of one checkpoint) end to end: text embeddings (cached),
    one batched sampling call, then per candidate: latent, decode, screening, MP4/poster/sprite, upload, ready."""

    def body(held: _Held) -> dict:
        from generation_workers import services

        job = services.job_load(candidate_ids)
        if job is None:
            return {"skipped": candidate_ids}
        taken = _take(job, held)
        if not taken:
            return {"skipped": candidate_ids}
        timings = services.Timings()
        with services.Heartbeat(held.ids):
            loaded = services.job_pipeline(job)
            text = services.text_embeddings_ensure(loaded=loaded, prompt=job.prompt, timings=timings)
            latents = services.latents_sample(loaded=loaded, job=job, text=text, candidates=taken,
                                              progress=services.ThrottledProgress(held.ids), timings=timings)
            statuses = {}
            for candidate, latent in zip(taken, latents, strict=True):
                statuses[candidate.id] = services.candidate_finish(loaded=loaded, job=job, candidate=candidate,
                                                                   latent=latent, text=text, timings=timings)
        return {"statuses": statuses, "timings_s": timings.as_dict()}

    return _run(self, candidate_ids, body)


# -- split queues: text (queue "text") -> sampling (queue "gpu") -> decoding (queue "vae") -----------------------------
@shared_task(name="generation_workers.tasks.candidates_text_encode", **TASK_OPTIONS)
def candidates_text_encode(self, candidate_ids: list[int]) -> dict:
    """Stage 1 of the split chain: make sure the prompt's text embeddings are in storage."""

    def body(held: _Held) -> dict:
        from annotation.models import Candidate
        from generation_workers import services

        job = services.job_load(candidate_ids)
        if job is None or all(c.status in candidate_services.TERMINAL for c in job.candidates):
            return {"skipped": candidate_ids}
        if Candidate.objects.filter(id__in=candidate_ids, group__round__status="cancelled").exists():
            return {"skipped": candidate_ids}
        text = services.text_embeddings_ensure(loaded=services.job_pipeline(job), prompt=job.prompt)
        return {"text_embedding_uri": text.uri, "cached": text.cached}

    return _run(self, candidate_ids, body)


@shared_task(name="generation_workers.tasks.candidates_sample", **TASK_OPTIONS)
def candidates_sample(self, candidate_ids: list[int]) -> list[int]:
    """Stage 2: take the candidates, sample their latents in one batch, store them; returns the ids sampled (the
    decode stage's argument). The candidates stay ``running`` until the decode stage finishes them."""

    def body(held: _Held) -> list[int]:
        from generation_workers import services

        job = services.job_load(candidate_ids)
        if job is None:
            return []
        taken = _take(job, held)
        if not taken:
            return []
        with services.Heartbeat(held.ids):
            loaded = services.job_pipeline(job)
            text = services.text_embeddings_ensure(loaded=loaded, prompt=job.prompt)
            latents = services.latents_sample(loaded=loaded, job=job, text=text, candidates=taken,
                                              progress=services.ThrottledProgress(held.ids))
            for candidate, latent in zip(taken, latents, strict=True):
                services.latent_store(job=job, candidate=candidate, latent=latent, loaded=loaded)
        return held.ids

    return _run(self, candidate_ids, body)


@shared_task(name="generation_workers.tasks.candidates_decode", **TASK_OPTIONS)
def candidates_decode(self, candidate_ids: list[int]) -> dict:
    """Stage 3: decode the stored latents of the candidates the sample stage handed over, encode, upload, ready."""

    def body(held: _Held) -> dict:
        from annotation.models import Candidate
        from annotation.storage import candidate_key, object_exists, uri_for
        from generation_workers import services

        if not candidate_ids:
            return {"skipped": []}
        job = services.job_load(candidate_ids)
        if job is None:
            return {"skipped": candidate_ids}
        todo = [c for c in job.candidates if c.status in (Candidate.Status.RUNNING, Candidate.Status.ENCODED)]
        held.ids = [c.id for c in todo]
        statuses = {}
        with services.Heartbeat(held.ids):
            loaded = services.job_pipeline(job)
            text = services.text_embeddings_ensure(loaded=loaded, prompt=job.prompt)
            for candidate in todo:
                key = candidate_key(round_id=job.round.id, group_id=job.group.id, candidate_id=candidate.id,
                                    filename="latent.safetensors")
                if not object_exists(key=key):
                    raise FileNotFoundError(f"latent of candidate {candidate.id} missing at {key}")
                latent = services.latent_load(job=job, candidate=candidate)
                statuses[candidate.id] = services.candidate_finish(
                    loaded=loaded, job=job, candidate=candidate, latent=latent, text=text, latent_uri=uri_for(key)
                )
        return {"statuses": statuses}

    return _run(self, candidate_ids, body)


# -- training (queue "train") -----------------------------------------------------------------------------------------
@shared_task(name="generation_workers.tasks.dpo_run_execute", acks_late=True)
def dpo_run_execute(run_id: int) -> str:
    """One DPO run: its manifest export -> ``dpo`` -> metrics -> the new checkpoint (``training.dpo_run_execute``)."""
    return training.dpo_run_execute(run_id=run_id)


@shared_task(name="generation_workers.tasks.reward_run_execute", acks_late=True)
def reward_run_execute(run_id: int) -> str:
    """One reward-model run: its manifest export -> ``dpo.reward`` -> curve and accuracies (``training``)."""
    return training.reward_run_execute(run_id=run_id)


@shared_task(name="generation_workers.tasks.reward_scores_round", acks_late=True)
def reward_scores_round(run_id: int, round_id: int) -> int:
    """A finished reward run scores a round's candidates (``training.reward_scores_round``)."""
    return training.reward_scores_round(run_id=run_id, round_id=round_id)


@shared_task(name="generation_workers.tasks.checkpoint_average_run", acks_late=True)
def checkpoint_average_run(checkpoint_ids: list[int], name: str, actor_id: int | None = None) -> int:
    """The uniform mean of several checkpoints' DiT weights as a new checkpoint; idempotent by name."""
    return training.checkpoint_average(checkpoint_ids=checkpoint_ids, name=name, actor_id=actor_id)


# -- recovery ---------------------------------------------------------------------------------------------------------
@shared_task(name="generation_workers.tasks.candidates_requeue_stale", acks_late=True)
def candidates_requeue_stale() -> int:
    """Periodic (and at every worker start): re-enqueue candidates whose worker died (no heartbeat for
    ``VIDEODPO["STALE_RUNNING_S"]``) - needed with brokers that cannot redeliver an unacked message (the embedded
    filesystem transport), and faster than Redis's visibility timeout."""
    return candidate_services.candidates_requeue_stale()


@shared_task(name="generation_workers.tasks.groups_refresh", acks_late=True)
def groups_refresh() -> int:
    """Periodic: re-derive the status of groups whose candidates are all finished but that are still ``generating``
    (or ``unusable``) from their candidates (``annotation.services.candidates.groups_refresh``); idempotent."""
    return candidate_services.groups_refresh()


@worker_ready.connect
def _requeue_stale_on_start(sender=None, **kwargs) -> None:
    """A worker that starts after a crash picks up the jobs the dead one held."""
    try:
        count = candidate_services.candidates_requeue_stale()
        if count:
            logger.info("re-enqueued %d candidates abandoned by a dead worker", count)
    except Exception:  # noqa: BLE001 - never keep a worker from starting
        logger.exception("stale-candidate sweep at worker start failed")
