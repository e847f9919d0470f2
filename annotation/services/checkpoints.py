"""Checkpoint actions of the researcher: average several checkpoints (Step: averaging beats EMA) and evaluate a
checkpoint against its reference (a fixed-seed evaluation round: both generate from the same initial noise on a
held-out prompt set, annotators judge them side by side, blind)."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from annotation.models import Checkpoint, Round
from annotation.services.rounds import prompts_select, round_create

ERR_AVERAGE_COUNT = "Pick at least two checkpoints to average."
ERR_AVERAGE_PRESETS = "Checkpoints to average must share one preset; got {presets}."
ERR_NAME_TAKEN = "A checkpoint named {name!r} already exists."
ERR_NO_REFERENCE = "Checkpoint {name!r} has no reference or parent to evaluate against."
ERR_NO_HELD_OUT = "No active held-out prompt: mark some prompts 'held out' (admin) for evaluation rounds."


def checkpoint_average_create(*, checkpoint_ids: list[int], name: str, actor=None) -> None:
    """Validate, then average the DiT weights in a job on queue ``train``; the new checkpoint (kind 'averaged',
    parent = the first, ``averaged_from`` = all) appears when the job is done."""
    from annotation.services.candidates import checkpoint_validate
    from annotation.tasks_dpo import checkpoint_average_run

    checkpoints = list(Checkpoint.objects.filter(id__in=checkpoint_ids).order_by("id"))
    if len(checkpoints) < 2:
        raise ValidationError(ERR_AVERAGE_COUNT)
    presets = sorted({c.preset for c in checkpoints})
    if len(presets) > 1:
        raise ValidationError(ERR_AVERAGE_PRESETS.format(presets=", ".join(presets)))
    if not name or Checkpoint.objects.filter(name=name).exists():
        raise ValidationError({"name": ERR_NAME_TAKEN.format(name=name)})
    for checkpoint in checkpoints:
        checkpoint_validate(checkpoint=checkpoint)
    checkpoint_average_run.delay_on_commit([c.id for c in checkpoints], name, getattr(actor, "pk", None))


def evaluation_round_create(*, checkpoint: Checkpoint, name: str, seeds_per_prompt: int = 2, sample_size: int = 0,
                            annotators_per_group: int = 3, actor=None) -> Round:
    """Policy vs its reference (or parent) on the held-out prompts, same seeds = same initial noise for both."""
    reference = checkpoint.reference or checkpoint.parent
    if reference is None:
        raise ValidationError(ERR_NO_REFERENCE.format(name=checkpoint.name))
    prompt_ids = prompts_select(held_out_only=True, sample_size=sample_size)
    if not prompt_ids:
        raise ValidationError(ERR_NO_HELD_OUT)
    return round_create(name=name, kind=Round.Kind.EVALUATION, policy_checkpoint=checkpoint, reference_checkpoint=reference,
                        prompt_ids=prompt_ids, seeds_per_prompt=seeds_per_prompt, base_seed=2_000_000,
                        annotators_per_group=annotators_per_group, actor=actor, launch=True)
