"""Celery (https://docs.celeryq.dev/en/stable/userguide/configuration.html), read by webapp/celery.py with the
``CELERY_`` namespace. Queues: ``default`` (web-side jobs, exports), ``gpu`` (generation), ``train`` (DPO runs)."""

from __future__ import annotations

import os

from kombu import Queue

from webapp.embedded import embedded_broker
from webapp.env import DATA_DIR, broker_url_check, env

_broker = os.environ.get("CELERY_BROKER_URL")
if _broker:
    CELERY_BROKER_URL = broker_url_check(_broker)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis/SQS: a message not acked within this time is redelivered; above the longest GPU job (acks_late).
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=6 * 3600),
    }
else:
    CELERY_BROKER_URL, CELERY_BROKER_TRANSPORT_OPTIONS = embedded_broker(DATA_DIR)

# Results in the Django database (django-celery-results): one mechanism for every broker.
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default="django-db")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a SIGKILLed worker's job goes back to the queue
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=3 * 3600)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=3 * 3600 + 600)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = (Queue("default"), Queue("gpu"), Queue("train"), Queue("text"), Queue("vae"))
CELERY_IMPORTS = ("annotation.tasks_exports",)
# The domain sends every job by name with its queue (annotation/services/dispatch.py); these routes are the same for
# jobs sent by hand (`celery call`). Exact names win over the glob: the training jobs run on queue train.
CELERY_TASK_ROUTES = {
    "generation_workers.tasks.dpo_run_execute": {"queue": "train"},
    "generation_workers.tasks.checkpoint_average_run": {"queue": "train"},
    "generation_workers.tasks.reward_run_execute": {"queue": "train"},
    "generation_workers.tasks.reward_scores_round": {"queue": "train"},
    "generation_workers.*": {"queue": "gpu"},
}
# Periodic jobs (run by `celery beat`, or `worker -B` in the quick start).
CELERY_BEAT_SCHEDULE = {
    # https://crontab.guru/#*_*_*_*_* : every minute, abandoned reservations go back to the queue.
    "assignments-expire": {"task": "annotation.tasks.assignments_expire", "schedule": 60.0},
    # every minute: a split group no annotator can (or did) take goes to review (small teams never deadlock)
    "groups-stalled-to-review": {"task": "annotation.tasks.groups_stalled_to_review", "schedule": 60.0},
    # every minute: candidates whose worker died (no heartbeat for VIDEODPO_STALE_RUNNING_S) are queued again
    "candidates-requeue-stale": {"task": "generation_workers.tasks.candidates_requeue_stale", "schedule": 60.0,
                                 "options": {"queue": "default"}},
    # every minute: groups whose candidates are all finished get the status those say (ready / unusable)
    "groups-refresh": {"task": "generation_workers.tasks.groups_refresh", "schedule": 60.0,
                       "options": {"queue": "default"}},
}
