"""Celery tasks of exports (queue ``default``): take an id, call one service. Registered through CELERY_IMPORTS."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="annotation.tasks_exports.export_run", acks_late=True)  # default queue (no route)
def export_run(export_id: int) -> dict:
    """Idempotent: a finished export returns at once; an interrupted one is written again from scratch."""
    from annotation.services.exports import export_run as run

    export = run(export_id=export_id)
    return {"export_id": export.pk, "status": export.status, "rows": export.row_count, "sha256": export.content_hash}
