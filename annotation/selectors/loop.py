"""Plain-data views of rounds, DPO runs and checkpoints for the API and the ``rounds`` command (not blind: for
researchers). Each is a fixed number of queries."""

from __future__ import annotations

from django.db.models import Count

from annotation.models import Checkpoint, DPORun, Round
from annotation.selectors.candidates import round_generation_progress

LIST_LIMIT = 200
TERMINAL_RUN = (DPORun.Status.DONE, DPORun.Status.FAILED, DPORun.Status.CANCELLED)


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _round_row(r: Round) -> dict:
    return {"id": r.pk, "name": r.name, "kind": r.kind, "status": r.status, "policy_checkpoint": r.policy_checkpoint_id,
            "reference_checkpoint": r.reference_checkpoint_id, "seeds_per_prompt": r.seeds_per_prompt,
            "annotators_per_group": r.annotators_per_group, "max_annotators_per_group": r.max_annotators_per_group,
            "created_at": _iso(r.created_at), "started_at": _iso(r.started_at), "finished_at": _iso(r.finished_at)}


def loop_rounds(*, limit: int = LIST_LIMIT) -> list[dict]:
    return [_round_row(r) for r in Round.objects.order_by("-id")[:limit]]


def round_status(*, round_id: int) -> dict:
    r = Round.objects.get(pk=round_id)
    groups = {row["status"]: row["n"] for row in r.groups.values("status").annotate(n=Count("id"))}
    progress = round_generation_progress(round_id=round_id)
    return {**_round_row(r), "groups": groups, "candidates": progress["counts"],
            "generation_fraction": round(progress["fraction"], 4), "pairs": r.pairs.count(),
            "ready_for_annotation": r.status == Round.Status.ANNOTATING}


def _run_row(run: DPORun) -> dict:
    return {"id": run.pk, "name": run.name, "status": run.status, "init_checkpoint": run.init_checkpoint_id,
            "reference_checkpoint": run.reference_checkpoint_id, "output_checkpoint": run.output_checkpoint_id,
            "pairs_count": run.pairs_count, "progress_step": run.progress_step, "progress_total": run.progress_total,
            "error": run.error, "finished": run.status in TERMINAL_RUN, "created_at": _iso(run.created_at),
            "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at)}


def loop_dpo_runs(*, limit: int = LIST_LIMIT) -> list[dict]:
    return [_run_row(run) for run in DPORun.objects.order_by("-id")[:limit]]


def dpo_run_status(*, run_id: int) -> dict:
    run = DPORun.objects.get(pk=run_id)
    return {**_run_row(run), "data_rounds": list(run.data_rounds.order_by("id").values_list("id", flat=True)),
            "metrics_summary": run.metrics_summary}


def checkpoint_status(*, checkpoint: Checkpoint) -> dict:
    return {"id": checkpoint.pk, "name": checkpoint.name, "kind": checkpoint.kind, "preset": checkpoint.preset,
            "uri": checkpoint.uri, "parent": checkpoint.parent_id, "reference": checkpoint.reference_id,
            "created_at": _iso(checkpoint.created_at)}


def loop_checkpoints(*, limit: int = LIST_LIMIT) -> list[dict]:
    return [checkpoint_status(checkpoint=c) for c in Checkpoint.objects.order_by("-id")[:limit]]
