"""Reward-model runs: choose pairs, validate, queue the reward model's training on ``train``, stream its curve, keep
its accuracy.

Like a DPO run (``services.dpo_runs``), a reward run's data is an export of its pair filter (versioned,
content-hashed), created with the run: a manifest export for the **latent** backbone (latents, text embeddings and
each pair's per-aspect outcomes; the head reads the starting checkpoint's DiT features), a VideoAlign export for
the **vlm** backbone (the decoded videos, the prompt and VQ / MQ / TA; a video language model from ``vlm_root`` is
LoRA-tuned on it). The job (``generation_workers.training.reward_run_execute``, by task name through
``services.dispatch``) runs that export, trains, copies its steps into RewardMetric rows (the run page draws the
curve from them) and stores the reward model folder with the held-out accuracy per aspect."""

from __future__ import annotations

import dataclasses

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.models import Candidate, Checkpoint, Export, RewardMetric, RewardRun, RewardScore, Round
from annotation.selectors.exports import pair_queryset_for_export
from annotation.services import candidates, dispatch
from annotation.services.dpo_runs import ERR_EVALUATION_ROUNDS, ERR_NO_NAME, ERR_NO_ROUNDS, training_filter
from annotation.services.exports import export_create
from dpo.reward_config import (  # torch-free
    ASPECTS,
    MIN_PAIRS_PER_ASPECT,
    LatentRewardConfig,
    VLMRewardConfig,
    aspect_shortfall,
)

ERR_NAME_TAKEN = "A reward run named {name!r} already exists."
ERR_NO_PAIRS = "No usable preference pairs in rounds {rounds} (pairs need both latents and the text embedding)."
ERR_NO_VIDEO_PAIRS = "No usable preference pairs in rounds {rounds} (a VLM reward model needs both videos of a pair)."
ERR_BACKBONE = "Unknown backbone {backbone!r}: latent or vlm."
ERR_NO_CHECKPOINT = "A latent reward model needs the checkpoint whose DiT gives the features."
ERR_NO_VLM_ROOT = "A VLM reward model needs the folder of the video language model (a path or an s3:// URI)."
ERR_VLM_ROOT_MISSING = ("VLM folder {root}: no model folder with a config.json there on this server (a Hugging Face "
                        "folder: config.json, weights, tokenizer; give an s3:// URI when the workers run elsewhere).")
ERR_VLM_ROOT_SCHEME = ("VLM folder {root!r}: give a local path or an s3://bucket/prefix URI (no '.' or '..' "
                       "segments).")
ERR_VLM_ROOT_TEXT = "VLM folder: at most 1024 characters, without control characters (tabs, newlines)."
ERR_NOT_CANCELLABLE = "Reward run {name!r} is {status}; only queued or running runs can be cancelled."
ERR_NOT_DONE = "Reward run {name!r} is {status}: only a finished run can score candidates."
ERR_NOTHING_TO_SCORE = ("Round {round!r} has no ready candidate this reward model can score (a latent model needs "
                        "the stored latent and text embedding, a VLM the video).")
CLOSED = (RewardRun.Status.DONE, RewardRun.Status.FAILED, RewardRun.Status.CANCELLED)


def aspect_pair_counts(*, pairs) -> dict[str, int]:
    """Pairs per aspect: every pair has the overall preference; vq / mq / ta count the pairs that carry that aspect."""
    return {"overall": pairs.count(),
            **{a: pairs.filter(aspects__has_key=a).count() for a in ASPECTS if a != "overall"}}


def vlm_root_problem(root: str) -> str:
    """Why a VLM folder cannot be used ("" when it can): at most 1,024 characters without control characters; an
    ``s3://bucket/prefix`` URI is checked for its form only (the worker downloads it and names what is missing); a
    local path must be a folder with config.json (one message whether the path is missing or is not a model
    folder, so the form does not tell which server paths exist)."""
    from pathlib import Path

    from model.layout import split_s3

    if not root:
        return ERR_NO_VLM_ROOT
    if len(root) > RewardRun._meta.get_field("vlm_root").max_length or any(ord(c) < 32 for c in root):
        return ERR_VLM_ROOT_TEXT
    if root.startswith("s3://"):
        try:
            split_s3(root)
        except ValueError:
            return ERR_VLM_ROOT_SCHEME.format(root=root)
        return ""
    if "://" in root:
        return ERR_VLM_ROOT_SCHEME.format(root=root)
    try:
        found = (Path(root) / "config.json").is_file()
    except OSError:  # a name the filesystem refuses (too long a component)
        found = False
    return "" if found else ERR_VLM_ROOT_MISSING.format(root=root)


def _reward_config(backbone: str, aspects: list[str] | None, overrides: dict | None):
    cls = VLMRewardConfig if backbone == RewardRun.Backbone.VLM else LatentRewardConfig
    return cls(**{**(overrides or {}), **({"aspects": tuple(aspects)} if aspects else {})})


@transaction.atomic
def reward_run_create(*, name: str, round_ids: list[int], init_checkpoint: Checkpoint | None = None,
                      aspects: list[str] | None = None, config_overrides: dict | None = None, actor=None,
                      launch: bool = True, include_evaluation: bool = False, backbone: str = "latent",
                      vlm_root: str = "") -> RewardRun:
    """Validate everything (name, backbone, rounds, the config, usable pairs, enough labelled pairs per asked aspect,
    the checkpoint or the VLM folder) before anything is saved or queued; then create the run with its data export
    (a manifest for ``latent``, a VideoAlign CSV for ``vlm``) and queue it."""
    name, vlm_root = (name or "").strip(), (vlm_root or "").strip()
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = ERR_NO_NAME
    elif RewardRun.objects.filter(name=name).exists():
        errors["name"] = ERR_NAME_TAKEN.format(name=name)
    if not round_ids:
        errors["round_ids"] = ERR_NO_ROUNDS
    if backbone not in RewardRun.Backbone.values:
        raise ValidationError({"backbone": ERR_BACKBONE.format(backbone=backbone)})
    vlm = backbone == RewardRun.Backbone.VLM
    try:
        cfg = _reward_config(backbone, aspects, config_overrides)
    except (TypeError, ValueError) as exc:
        errors["aspects" if "aspects" in str(exc) else "config"] = str(exc)
    if vlm:
        problem = vlm_root_problem(vlm_root)
        if problem:
            errors["vlm_root"] = problem
    elif init_checkpoint is None:
        errors["init_checkpoint"] = ERR_NO_CHECKPOINT
    if errors:
        raise ValidationError(errors)
    evaluation = list(Round.objects.filter(id__in=round_ids, kind=Round.Kind.EVALUATION).values_list("name", flat=True))
    if evaluation and not include_evaluation:
        raise ValidationError({"round_ids": ERR_EVALUATION_ROUNDS.format(names=", ".join(sorted(evaluation)))})
    fmt = Export.Format.VIDEOALIGN if vlm else Export.Format.MANIFEST
    flt = training_filter(round_ids=round_ids, format=fmt)
    pairs = pair_queryset_for_export(flt=flt, format=fmt)
    counts = aspect_pair_counts(pairs=pairs)
    if counts["overall"] == 0:
        raise ValidationError((ERR_NO_VIDEO_PAIRS if vlm else ERR_NO_PAIRS).format(rounds=round_ids))
    counts = {a: counts[a] for a in cfg.aspects}
    total = pairs.count()
    problem = aspect_shortfall(counts, total=total)
    if problem:
        raise ValidationError({"round_ids" if total < MIN_PAIRS_PER_ASPECT else "aspects": problem})
    if init_checkpoint is not None:
        candidates.checkpoint_validate(checkpoint=init_checkpoint)
    config = {**dataclasses.asdict(cfg), "aspects": list(cfg.aspects)}
    run = RewardRun(name=name, backbone=backbone, init_checkpoint=init_checkpoint, vlm_root=vlm_root if vlm else "",
                    created_by=actor, pairs_count=pairs.count(), aspect_pairs=counts, config=config,
                    progress_total=cfg.steps)
    run.full_clean(exclude=["manifest_export"])
    run.manifest_export = export_create(format=fmt, filter=flt.as_json(), actor=actor, enqueue=False)
    run.save()
    run.data_rounds.set(round_ids)
    if launch:
        dispatch.reward_run_dispatch_on_commit(run_id=run.id)
    return run


def reward_run_mark_running(*, run_id: int) -> RewardRun | None:
    """The worker takes the run (a redelivered job resumes it); None when it is closed or was cancelled first."""
    run = RewardRun.objects.select_related("init_checkpoint", "manifest_export").get(id=run_id)
    if run.status in CLOSED:
        return None
    if run.cancel_requested:
        reward_run_finish(run_id=run_id, status=RewardRun.Status.CANCELLED, error="cancelled")
        return None
    RewardRun.objects.filter(id=run_id).update(status=RewardRun.Status.RUNNING, updated_at=timezone.now(),
                                               started_at=run.started_at or timezone.now())
    run.refresh_from_db()
    return run


def reward_run_record_metrics(*, run_id: int, metrics: dict) -> bool:
    """Store one step's values; True when a cancel was requested (the trainer then stops, its state saved)."""
    step = int(metrics.get("step", 0))
    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    RewardMetric.objects.update_or_create(run_id=run_id, step=step, defaults={"values": clean})
    RewardRun.objects.filter(id=run_id).update(progress_step=step, updated_at=timezone.now())
    return RewardRun.objects.filter(id=run_id, cancel_requested=True).exists()


def reward_run_cancel(*, run_id: int) -> RewardRun:
    run = RewardRun.objects.get(id=run_id)
    if run.status not in (RewardRun.Status.QUEUED, RewardRun.Status.RUNNING):
        raise ValidationError(ERR_NOT_CANCELLABLE.format(name=run.name, status=run.status))
    RewardRun.objects.filter(id=run_id).update(cancel_requested=True, updated_at=timezone.now())
    if run.status == RewardRun.Status.QUEUED:
        reward_run_finish(run_id=run_id, status=RewardRun.Status.CANCELLED, error="cancelled before it started")
    run.refresh_from_db()
    return run


@transaction.atomic
def reward_run_finish(*, run_id: int, status: str, error: str = "", output_uri: str = "",
                      summary: dict | None = None) -> RewardRun:
    """Close a run (idempotent); a done run keeps its accuracies and the lineage of its data."""
    run = RewardRun.objects.select_for_update().get(id=run_id)
    if run.status in CLOSED:
        return run
    run.status, run.error, run.finished_at = status, error, timezone.now()
    run.output_uri = output_uri or run.output_uri
    if summary is not None:
        export = run.manifest_export
        run.metrics_summary = {**summary, "lineage": {
            "init_checkpoint": run.init_checkpoint_id, "data_rounds": list(run.data_rounds.values_list("id", flat=True)),
            "manifest_export": None if export is None else {"id": export.pk, "version": export.version,
                                                            "sha256": export.content_hash}}}
    run.save()
    return run



def scorable_candidates(*, round_id: int, backbone: str = "latent"):
    """A round's candidates a reward model can score: ready, with the latent and the text embedding stored (latent)
    or the video (vlm; a ready candidate always has one)."""
    ready = Candidate.objects.filter(group__round_id=round_id, status=Candidate.Status.READY)
    if backbone == RewardRun.Backbone.VLM:
        return ready.exclude(video_uri="")
    return ready.exclude(latent_uri="").exclude(text_embedding_uri="")


def reward_scores_request(*, run_id: int, round_id: int) -> int:
    """Queue the scoring of a round's candidates by a finished reward run (queue ``train``); the number to score."""
    run = RewardRun.objects.get(id=run_id)
    round = Round.objects.get(id=round_id)
    if run.status != RewardRun.Status.DONE:
        raise ValidationError(ERR_NOT_DONE.format(name=run.name, status=run.status))
    count = scorable_candidates(round_id=round.id, backbone=run.backbone).count()
    if not count:
        raise ValidationError(ERR_NOTHING_TO_SCORE.format(round=round.name))
    dispatch.reward_scores_dispatch_on_commit(run_id=run.id, round_id=round.id)
    return count


def reward_scores_store(*, run_id: int, scores: dict[int, dict[str, float]]) -> int:
    """Upsert one RewardScore per candidate (idempotent: a redelivered job rewrites the same rows)."""
    rows = [RewardScore(run_id=run_id, candidate_id=cid, scores=s) for cid, s in scores.items()]
    RewardScore.objects.bulk_create(rows, update_conflicts=True, unique_fields=["run", "candidate"],
                                    update_fields=["scores"])
    return len(rows)
