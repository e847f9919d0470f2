"""Checkpoints: registering a new one (DPO runs, averaging), and the researcher's actions on them: average several
checkpoints (Step: averaging beats EMA) and evaluate a checkpoint against its reference (a fixed-seed evaluation
round: both generate from the same initial noise on a held-out prompt set, annotators judge them side by side, blind)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.models import Checkpoint, Round
from annotation.selectors.round_preview import default_annotators_per_group
from annotation.services import candidates, dispatch
from annotation.services.rounds import prompts_select, round_create

ERR_AVERAGE_COUNT = "Pick at least two checkpoints to average."
ERR_AVERAGE_PRESETS = "Checkpoints to average must share one preset; got {presets}."
ERR_NAME_TAKEN = "A checkpoint named {name!r} already exists."
ERR_NO_REFERENCE = "Checkpoint {name!r} has no reference or parent to evaluate against."
ERR_NO_HELD_OUT = ("No active held-out prompt: evaluation rounds judge prompts kept out of training; mark some "
                   "'held out' on the prompt pool page (/research/prompts/, the bulk action) or import them as held "
                   "out.")


def checkpoint_register(*, name: str, uri: str, preset: str, kind: str, parent: Checkpoint | None = None,
                        reference: Checkpoint | None = None, actor_id: int | None = None, config: dict | None = None,
                        metrics: dict | None = None, averaged_from: list[Checkpoint] | None = None) -> Checkpoint:
    """A new model root in the registry with its lineage; complete (with its sources) or not at all."""
    with transaction.atomic():
        checkpoint = Checkpoint(name=name, uri=uri, preset=preset, kind=kind, parent=parent, reference=reference,
                                created_by_id=actor_id, config=config or {}, metrics=metrics or {})
        checkpoint.full_clean(validate_unique=False, validate_constraints=False)
        checkpoint.save()
        if averaged_from:
            checkpoint.averaged_from.set(averaged_from)
    return checkpoint


def checkpoint_average_register(*, checkpoint_ids: list[int], name: str, uri: str,
                                actor_id: int | None = None) -> Checkpoint:
    """Register the average of ``checkpoint_ids`` (written by the worker at ``uri``): kind 'averaged', parent and
    reference from the first source. Idempotent by name (a redelivered job finds it)."""
    existing = Checkpoint.objects.filter(name=name).first()
    if existing is not None:
        return existing
    sources = list(Checkpoint.objects.filter(id__in=checkpoint_ids).order_by("id"))
    return checkpoint_register(
        name=name, uri=uri, preset=sources[0].preset, kind=Checkpoint.Kind.AVERAGED, parent=sources[0],
        reference=sources[0].reference, actor_id=actor_id, averaged_from=sources,
        config={"averaged_from": [c.name for c in sources], "method": "uniform mean of DiT weights"},
    )


def checkpoint_average_create(*, checkpoint_ids: list[int], name: str, actor=None) -> None:
    """Validate, then average the DiT weights in a job on queue ``train``; the new checkpoint (kind 'averaged',
    parent = the first, ``averaged_from`` = all) appears when the job is done."""
    checkpoints = list(Checkpoint.objects.filter(id__in=checkpoint_ids).order_by("id"))
    if len(checkpoints) < 2:
        raise ValidationError(ERR_AVERAGE_COUNT)
    presets = sorted({c.preset for c in checkpoints})
    if len(presets) > 1:
        raise ValidationError(ERR_AVERAGE_PRESETS.format(presets=", ".join(presets)))
    if not name or Checkpoint.objects.filter(name=name).exists():
        raise ValidationError({"name": ERR_NAME_TAKEN.format(name=name)})
    for checkpoint in checkpoints:
        candidates.checkpoint_validate(checkpoint=checkpoint)
    dispatch.checkpoint_average_dispatch_on_commit(checkpoint_ids=[c.id for c in checkpoints], name=name,
                                                   actor_id=getattr(actor, "pk", None))


def evaluation_round_create(*, checkpoint: Checkpoint, name: str, seeds_per_prompt: int = 2, sample_size: int = 0,
                            annotators_per_group: int | None = None, actor=None) -> Round:
    """Policy vs its reference (or parent) on the held-out prompts, same seeds = same initial noise for both. k
    annotators per group defaults to 3, or fewer when fewer annotators can judge now (else no group completes)."""
    reference = checkpoint.reference or checkpoint.parent
    if reference is None:
        raise ValidationError(ERR_NO_REFERENCE.format(name=checkpoint.name))
    prompt_ids = prompts_select(held_out_only=True, sample_size=sample_size)
    if not prompt_ids:
        raise ValidationError(ERR_NO_HELD_OUT)
    return round_create(name=name, kind=Round.Kind.EVALUATION, policy_checkpoint=checkpoint, reference_checkpoint=reference,
                        prompt_ids=prompt_ids, seeds_per_prompt=seeds_per_prompt, base_seed=2_000_000,
                        annotators_per_group=annotators_per_group or default_annotators_per_group(), actor=actor,
                        launch=True)
