"""DPO rounds: choose pairs, validate, queue the trainer on ``train``, stream its metrics, register the checkpoint.

The run itself (``annotation.tasks_dpo.dpo_run_execute``) writes the pair manifest, runs ``dpo`` in process (or
``torchrun -m dpo`` when ``config["nproc_per_node"] > 1``), copies every logged step into DPOMetric rows (the run
page draws its curves from them) and, on success, registers the output checkpoint with its lineage."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from annotation import storage
from annotation.models import Checkpoint, DPOMetric, DPORun, PreferencePair, Round
from annotation.services.rounds import round_transition_apply

ERR_NO_PAIRS = "No usable preference pairs: rounds {rounds}, min agreement {min_agreement}, min annotators {min_annotators}."
ERR_PAIRS_WITHOUT_LATENTS = "{n} selected pairs have candidates without stored latents (e.g. pair {example})."
ERR_RUN_NOT_CANCELLABLE = "DPO run {name!r} is {status}; only queued or running runs can be cancelled."
ERR_NAME_TAKEN = "A DPO run named {name!r} already exists."
ERR_REFERENCE_WITH_ADAPTERS_OFF = (
    "With LoRA and reference_mode 'lora_adapters_off' the reference is the starting checkpoint itself: leave the "
    "reference empty or set reference_mode 'frozen_copy' (or 'cached') in the config overrides."
)
ERR_REFERENCE_PRESET = "The reference ({reference}) is a {ref_preset!r} checkpoint but the run starts from a {preset!r} one."


# Trainer config presets offered in the admin (dpo.config.FlowDPOConfig field names).
CONFIG_PRESETS: dict[str, dict] = {
    "tiny-cpu": {"beta": 500.0, "learning_rate": 1e-4, "max_steps": 60, "per_device_train_batch_size": 4,
                 "save_steps": 20, "bf16": False, "t_sampling": "uniform"},
    "lora-h200": {"beta": 2000.0, "learning_rate": 1e-5, "use_lora": True, "lora_r": 64, "max_steps": 1000,
                  "gradient_checkpointing": True, "memory_saving_backward": True, "save_steps": 100},
    "full-fsdp": {"beta": 2000.0, "learning_rate": 1e-5, "max_steps": 1000, "fsdp": "full_shard",
                  "gradient_checkpointing": True, "memory_saving_backward": True, "save_steps": 100},
}


def _is_positive(value) -> bool:
    try:
        return float(value or 0) > 0
    except (TypeError, ValueError):
        return False  # FlowDPOConfig reports the bad value by name


def pairs_for_training(*, round_ids: list[int], min_agreement: float = 0.0, min_annotators: int = 1) -> QuerySet:
    return (
        PreferencePair.objects.filter(round_id__in=round_ids, agreement__gte=min_agreement, n_annotators__gte=min_annotators)
        .select_related("round", "group", "chosen", "rejected")
        .order_by("id")
    )


def pair_weight(pair: PreferencePair, weighting: str) -> float:
    """'uniform' = 1; 'agreement' = the pair's agreement; 'stored' = the weight computed at aggregation."""
    if weighting == "agreement":
        return float(pair.agreement)
    if weighting == "stored":
        return float(pair.weight)
    return 1.0


@transaction.atomic
def dpo_run_create(*, name: str, round_ids: list[int], init_checkpoint: Checkpoint,
                   reference_checkpoint: Checkpoint | None = None, config_preset: str = "tiny-cpu",
                   config_overrides: dict | None = None, use_lora: bool = False, min_agreement: float = 0.0,
                   min_annotators: int = 1, weighting: str = "agreement", actor=None, launch: bool = True) -> DPORun:
    """Validate the selection (pairs exist and have latents, checkpoints are loadable) and queue the run on commit."""
    from annotation.services.candidates import checkpoint_validate

    if DPORun.objects.filter(name=name).exists():
        raise ValidationError({"name": ERR_NAME_TAKEN.format(name=name)})
    if config_preset not in CONFIG_PRESETS:
        raise ValidationError({"config_preset": f"Unknown trainer preset {config_preset!r}: one of {', '.join(CONFIG_PRESETS)}."})
    config = {**CONFIG_PRESETS[config_preset], **(config_overrides or {})}
    if use_lora:
        config["use_lora"] = True
    if _is_positive(config.get("prompt_dropout")) and not config.get("null_text_embedding_uri"):
        # written by the run from the starting checkpoint's text encoders (annotation.tasks_dpo)
        config["null_text_embedding_uri"] = storage.uri_for(
            storage.empty_prompt_embedding_key(checkpoint_id=init_checkpoint.id))
    from dpo.config import FlowDPOConfig  # torch-free validation of every field (unknown/LLM-only rejected)

    try:
        resolved = FlowDPOConfig.from_dict(config)
    except ValueError as exc:
        raise ValidationError({"config": str(exc)}) from exc
    reference_checkpoint = reference_checkpoint or init_checkpoint
    if reference_checkpoint.pk != init_checkpoint.pk and resolved.reference_mode == "lora_adapters_off":
        raise ValidationError({"reference_checkpoint": ERR_REFERENCE_WITH_ADAPTERS_OFF})
    if reference_checkpoint.preset != init_checkpoint.preset:
        raise ValidationError({"reference_checkpoint": ERR_REFERENCE_PRESET.format(
            reference=reference_checkpoint.name, ref_preset=reference_checkpoint.preset, preset=init_checkpoint.preset)})
    for checkpoint in {init_checkpoint, reference_checkpoint}:
        checkpoint_validate(checkpoint=checkpoint)
    pairs = pairs_for_training(round_ids=round_ids, min_agreement=min_agreement, min_annotators=min_annotators)
    count = pairs.count()
    if count == 0:
        raise ValidationError(ERR_NO_PAIRS.format(rounds=round_ids, min_agreement=min_agreement, min_annotators=min_annotators))
    no_latent = pairs.filter(chosen__latent_uri="") | pairs.filter(rejected__latent_uri="")
    if no_latent.exists():
        raise ValidationError(ERR_PAIRS_WITHOUT_LATENTS.format(n=no_latent.count(), example=no_latent.first().id))
    run = DPORun.objects.create(
        name=name, init_checkpoint=init_checkpoint, reference_checkpoint=reference_checkpoint, created_by=actor,
        pair_filter={"round_ids": round_ids, "min_agreement": min_agreement, "min_annotators": min_annotators,
                     "weighting": weighting, "config_preset": config_preset},
        pairs_count=count, config=config, progress_total=int(config.get("max_steps") or 0),
    )
    run.data_rounds.set(round_ids)
    for round in Round.objects.select_for_update().filter(id__in=round_ids, status=Round.Status.ANNOTATING):
        round_transition_apply(round=round, to_status=Round.Status.TRAINING, actor=actor, note=f"DPO run {name}")
    if launch:
        from annotation.tasks_dpo import dpo_run_execute

        dpo_run_execute.delay_on_commit(run.id)
    return run


def dpo_run_cancel(*, run_id: int, actor=None) -> DPORun:
    run = DPORun.objects.get(id=run_id)
    if run.status not in (DPORun.Status.QUEUED, DPORun.Status.RUNNING):
        raise ValidationError(ERR_RUN_NOT_CANCELLABLE.format(name=run.name, status=run.status))
    DPORun.objects.filter(id=run_id).update(cancel_requested=True, updated_at=timezone.now())
    if run.status == DPORun.Status.QUEUED:
        dpo_run_finish(run_id=run_id, status=DPORun.Status.CANCELLED, error="cancelled before it started")
    run.refresh_from_db()
    return run


def dpo_run_record_metrics(*, run_id: int, metrics: dict) -> bool:
    """Store one step's metrics; returns True when a cancel was requested (the trainer then stops)."""
    step = int(metrics.get("step", 0))
    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    DPOMetric.objects.update_or_create(run_id=run_id, step=step, defaults={"values": clean})
    DPORun.objects.filter(id=run_id).update(progress_step=step, updated_at=timezone.now())
    return DPORun.objects.filter(id=run_id, cancel_requested=True).exists()


@transaction.atomic
def dpo_run_finish(*, run_id: int, status: str, error: str = "", output_uri: str = "", summary: dict | None = None) -> DPORun:
    """Close a run; on success register the output checkpoint (parent = init, reference = the run's reference)."""
    run = DPORun.objects.select_for_update().select_related("init_checkpoint", "reference_checkpoint").get(id=run_id)
    if run.status in (DPORun.Status.DONE, DPORun.Status.FAILED, DPORun.Status.CANCELLED):
        return run  # idempotent: a redelivered task finds the run closed
    run.status, run.error, run.finished_at = status, error, timezone.now()
    run.metrics_summary = summary or run.metrics_summary
    run.output_uri = output_uri or run.output_uri
    if status == DPORun.Status.DONE:
        run.output_checkpoint = Checkpoint.objects.create(
            name=f"{run.name}", uri=output_uri, preset=run.init_checkpoint.preset, kind=Checkpoint.Kind.DPO,
            parent=run.init_checkpoint, reference=run.reference_checkpoint, created_by=run.created_by,
            config={"dpo": run.config, "pair_filter": run.pair_filter, "pairs_count": run.pairs_count,
                    "data_rounds": list(run.data_rounds.values_list("id", flat=True)), "dpo_run": run.id},
            metrics=summary or {},
        )
    run.save()
    next_round_status = Round.Status.DONE if status == DPORun.Status.DONE else Round.Status.ANNOTATING
    for round in Round.objects.select_for_update().filter(dpo_runs=run, status=Round.Status.TRAINING):
        round_transition_apply(round=round, to_status=next_round_status, note=f"DPO run {run.name}: {status}")
    return run
