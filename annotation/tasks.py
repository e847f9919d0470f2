"""Celery tasks of the annotation app: thin wrappers that take ids and call one service."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="annotation.tasks.ping")
def ping(payload: str = "ping") -> dict:
    """Round-trip check: proves a worker process is consuming and can reach the database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        database = cursor.fetchone()[0]
    return {"pong": payload, "database": database}


@shared_task(name="annotation.tasks.groups_stalled_to_review")
def groups_stalled_to_review() -> int:
    """Periodic: split groups that cannot get (or did not get) another annotator go to review."""
    from annotation.services.stalled import groups_stalled_to_review as move

    return move()


@shared_task(name="annotation.tasks.assignments_expire")
def assignments_expire() -> int:
    """Periodic: abandoned reservations go back to the queue."""
    from annotation.services.assignments import assignments_expire as expire

    return expire()


@shared_task(name="annotation.tasks.prompt_import_run", acks_late=True)  # queue default
def prompt_import_run(import_id: int) -> dict:
    """Idempotent: a finished import returns at once; an interrupted one runs again (its transaction rolled back)."""
    from annotation.services.prompt_imports import prompt_import_run as run

    job = run(import_id=import_id)
    return {"import_id": job.pk, "status": job.status, "created": job.report.get("created", 0)}
