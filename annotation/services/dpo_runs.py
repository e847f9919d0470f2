"""DPO rounds: choose pairs, validate, queue the trainer on ``train``, stream its metrics, register the checkpoint.

A run's training data is an ``Export`` of format ``manifest`` with the run's pair filter and weighting, created with
the run (so every run's data is a versioned, content-hashed export, and the same filter exported by hand gives the same
bytes). The job (``generation_workers.training``, by task name through ``services.dispatch``) runs that export,
trains on its artifact with ``dpo`` in process (or ``torchrun -m dpo`` when ``config["nproc_per_node"] > 1``),
copies every logged step into DPOMetric rows (the run page draws its curves from them) and, on success, registers the
output checkpoint with its lineage through :func:`dpo_run_finish`."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotation import storage
from annotation.exports.filters import ExportFilter, ExportFilterError, filter_parse
from annotation.models import Checkpoint, DPOMetric, DPORun, Export, Round
from annotation.selectors.exports import pair_queryset_for_export
from annotation.services import candidates, dispatch
from annotation.services.checkpoints import checkpoint_register
from annotation.services.exports import export_create
from annotation.services.round_states import round_transition_apply
from dpo.config import FlowDPOConfig  # torch-free validation of every field (unknown/LLM-only rejected)

ERR_OVERRIDE_URI = ("{field} must name an object of this app's storage (s3://<its bucket>/<key>, or a file:// path inside "
                    "its media folder); got {value!r}.")
ERR_NO_PAIRS = "No usable preference pairs: rounds {rounds}, min agreement {min_agreement}, min annotators {min_annotators}."
ERR_RUN_NOT_CANCELLABLE = "DPO run {name!r} is {status}; only queued or running runs can be cancelled."
ERR_NAME_TAKEN = "A DPO run named {name!r} already exists."
ERR_CHECKPOINT_NAME_TAKEN = "A checkpoint named {name!r} already exists; the run's output checkpoint takes its name."
ERR_NO_NAME = "Give the run a name (its output checkpoint is named after it)."
ERR_NO_ROUNDS = "Tick at least one round to take preference pairs from."
# Fewer usable pairs than this: the run is accepted, with a warning on its page (DPO on a handful of pairs overfits).
FEW_PAIRS = 8
WARN_FEW_PAIRS = ("Only {count} usable preference pair{s}: DPO on so few pairs mostly memorises them; judge more groups "
                  "(or lower min agreement / min annotators) for a run that generalises.")
ERR_EVALUATION_ROUNDS = ("{names}: evaluation round(s), on held-out prompts to measure the model; training on them leaks "
                         "the evaluation into the model. Leave them out, or include them explicitly (include_evaluation).")
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


HUMAN_SOURCES = ["human", "reviewer"]  # pseudo-labels (source model) only when a run asks for them


def training_filter(*, round_ids: list[int], min_agreement: float = 0.0, min_annotators: int = 1,
                    weighting: str = "agreement", include_pseudo_labels: bool = False,
                    format: str = Export.Format.MANIFEST) -> ExportFilter:
    """The export filter (a manifest by default) of a run's pair selection (raises ValidationError for a bad one):
    the people's pairs, and the reward model's pseudo-labels too with ``include_pseudo_labels``."""
    try:
        return filter_parse({"rounds": round_ids, "min_agreement": min_agreement, "min_annotators": min_annotators,
                             "weighting": weighting, **({} if include_pseudo_labels else {"source": HUMAN_SOURCES})},
                            format=format)
    except ExportFilterError as exc:
        raise ValidationError(str(exc)) from exc


@transaction.atomic
def dpo_run_create(*, name: str, round_ids: list[int], init_checkpoint: Checkpoint,
                   reference_checkpoint: Checkpoint | None = None, config_preset: str = "tiny-cpu",
                   config_overrides: dict | None = None, use_lora: bool = False, min_agreement: float = 0.0,
                   min_annotators: int = 1, weighting: str = "agreement", actor=None, launch: bool = True,
                   include_evaluation: bool = False, include_pseudo_labels: bool = False) -> DPORun:
    """Validate the selection (usable pairs exist, checkpoints are loadable), create the run with its manifest export
    and queue the run on commit. Pairs without both latents or the text embedding are left out, as in every manifest
    export (``pair_filter["left_out"]`` counts them). Evaluation rounds (held-out prompts) are refused unless
    ``include_evaluation``: training on them leaks the evaluation into the model. Everything, the run's own fields
    included (``full_clean``), is checked before anything is saved or queued."""
    name = (name or "").strip()
    errors = {}
    if not name:
        errors["name"] = ERR_NO_NAME
    elif DPORun.objects.filter(name=name).exists():
        errors["name"] = ERR_NAME_TAKEN.format(name=name)
    elif Checkpoint.objects.filter(name=name).exists():  # the output checkpoint takes the run's name when it finishes
        errors["name"] = ERR_CHECKPOINT_NAME_TAKEN.format(name=name)
    if not round_ids:
        errors["round_ids"] = ERR_NO_ROUNDS
    if errors:
        raise ValidationError(errors)
    evaluation = list(Round.objects.filter(id__in=round_ids, kind=Round.Kind.EVALUATION).values_list("name", flat=True))
    if evaluation and not include_evaluation:
        raise ValidationError({"round_ids": ERR_EVALUATION_ROUNDS.format(names=", ".join(sorted(evaluation)))})
    if config_preset not in CONFIG_PRESETS:
        raise ValidationError({"config_preset": f"Unknown trainer preset {config_preset!r}: one of {', '.join(CONFIG_PRESETS)}."})
    for field, value in (config_overrides or {}).items():
        if str(field).endswith("_uri") and value is not None and not storage.is_storage_uri(value):
            raise ValidationError({"config_overrides": ERR_OVERRIDE_URI.format(field=str(field)[:64], value=str(value)[:200])})
    config = {**CONFIG_PRESETS[config_preset], **(config_overrides or {})}
    if use_lora:
        config["use_lora"] = True
    if _is_positive(config.get("prompt_dropout")) and not config.get("null_text_embedding_uri"):
        # written by the run from the starting checkpoint's text encoders (generation_workers.training)
        config["null_text_embedding_uri"] = storage.uri_for(
            storage.empty_prompt_embedding_key(checkpoint_id=init_checkpoint.id))
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
        candidates.checkpoint_validate(checkpoint=checkpoint)
    flt = training_filter(round_ids=round_ids, min_agreement=min_agreement, min_annotators=min_annotators,
                          weighting=weighting, include_pseudo_labels=include_pseudo_labels)
    count = pair_queryset_for_export(flt=flt, format=Export.Format.MANIFEST).count()
    if count == 0:
        raise ValidationError(ERR_NO_PAIRS.format(rounds=round_ids, min_agreement=min_agreement, min_annotators=min_annotators))
    left_out = pair_queryset_for_export(flt=flt, format=Export.Format.TRL).count() - count
    run = DPORun(
        name=name, init_checkpoint=init_checkpoint, reference_checkpoint=reference_checkpoint, created_by=actor,
        pair_filter={"round_ids": round_ids, "min_agreement": min_agreement, "min_annotators": min_annotators,
                     "weighting": weighting, "config_preset": config_preset, "left_out": left_out,
                     **({"include_pseudo_labels": True} if include_pseudo_labels else {}),
                     **({"include_evaluation": True} if evaluation else {})},
        pairs_count=count, config=config, progress_total=int(config.get("max_steps") or 0),
    )
    run.full_clean(exclude=["manifest_export"])  # the run's own fields, before the export row and the queue
    run.manifest_export = export_create(format=Export.Format.MANIFEST, filter=flt.as_json(), actor=actor, enqueue=False)
    run.save()
    run.data_rounds.set(round_ids)
    for round in Round.objects.select_for_update().filter(id__in=round_ids, status=Round.Status.ANNOTATING):
        round_transition_apply(round=round, to_status=Round.Status.TRAINING, actor=actor, note=f"DPO run {name}")
    if launch:
        dispatch.dpo_run_dispatch_on_commit(run_id=run.id)
    return run


def dpo_run_warnings(*, run: DPORun) -> list[str]:
    """What a researcher should know about an accepted run (shown on the form's result and the run page)."""
    if run.pairs_count < FEW_PAIRS:
        return [WARN_FEW_PAIRS.format(count=run.pairs_count, s="" if run.pairs_count == 1 else "s")]
    return []


def dpo_run_cancel(*, run_id: int, actor=None) -> DPORun:
    run = DPORun.objects.get(id=run_id)
    if run.status not in (DPORun.Status.QUEUED, DPORun.Status.RUNNING):
        raise ValidationError(ERR_RUN_NOT_CANCELLABLE.format(name=run.name, status=run.status))
    DPORun.objects.filter(id=run_id).update(cancel_requested=True, updated_at=timezone.now())
    if run.status == DPORun.Status.QUEUED:
        dpo_run_finish(run_id=run_id, status=DPORun.Status.CANCELLED, error="cancelled before it started")
    run.refresh_from_db()
    return run


def dpo_run_mark_running(*, run_id: int) -> DPORun | None:
    """The worker takes the run: ``queued``/``running`` (a redelivered job resumes) -> ``running``. None when the run
    is closed (nothing to do) or was cancelled before it started (then it is closed here)."""
    run = DPORun.objects.select_related("init_checkpoint", "reference_checkpoint", "manifest_export").get(id=run_id)
    if run.status in (DPORun.Status.DONE, DPORun.Status.FAILED, DPORun.Status.CANCELLED):
        return None
    if run.cancel_requested:
        dpo_run_finish(run_id=run_id, status=DPORun.Status.CANCELLED, error="cancelled")
        return None
    DPORun.objects.filter(id=run_id).update(status=DPORun.Status.RUNNING, started_at=run.started_at or timezone.now(),
                                            updated_at=timezone.now())
    run.refresh_from_db()
    return run


def dpo_run_cancel_requested(*, run_id: int) -> bool:
    return DPORun.objects.filter(id=run_id, cancel_requested=True).exists()


def dpo_run_record_metrics(*, run_id: int, metrics: dict) -> bool:
    """Store one step's metrics; returns True when a cancel was requested (the trainer then stops)."""
    step = int(metrics.get("step", 0))
    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    DPOMetric.objects.update_or_create(run_id=run_id, step=step, defaults={"values": clean})
    DPORun.objects.filter(id=run_id).update(progress_step=step, updated_at=timezone.now())
    return dpo_run_cancel_requested(run_id=run_id)


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
        export = run.manifest_export
        run.output_checkpoint = checkpoint_register(
            name=run.name, uri=output_uri, preset=run.init_checkpoint.preset, kind=Checkpoint.Kind.DPO,
            parent=run.init_checkpoint, reference=run.reference_checkpoint, actor_id=run.created_by_id,
            config={"dpo": run.config, "pair_filter": run.pair_filter, "pairs_count": run.pairs_count,
                    "data_rounds": list(run.data_rounds.values_list("id", flat=True)), "dpo_run": run.id,
                    "manifest_export": None if export is None else {
                        "id": export.pk, "version": export.version, "sha256": export.content_hash, "uri": export.uri}},
            metrics=summary or {},
        )
    run.save()
    next_round_status = Round.Status.DONE if status == DPORun.Status.DONE else Round.Status.ANNOTATING
    for round in Round.objects.select_for_update().filter(dpo_runs=run, status=Round.Status.TRAINING):
        round_transition_apply(round=round, to_status=next_round_status, note=f"DPO run {run.name}: {status}")
    return run
