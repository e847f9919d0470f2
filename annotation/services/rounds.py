"""Rounds: creation with prompt selection and validation. Status changes go through ``round_states``."""

from __future__ import annotations

import random

from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.models import Checkpoint, Prompt, Round, RoundEvent
from annotation.services.candidates import round_generation_enqueue, round_generation_validate
from annotation.services.round_states import round_transition, round_transition_apply  # noqa: F401 - re-exported
from model.presets import PRESET_NAMES, get_preset

ERR_NO_PROMPTS_SELECTED = "No active prompt matches the selection (category {category!r}, tags {tags}, search {search!r})."
ERR_SEGMENT_SECONDS = "must be from 0.2 to 60 seconds, got {value}"
ERR_NAME_TAKEN = "A round named {name!r} already exists."
MAX_SAMPLE_SIZE = 100_000  # prompts in one round (as many as a round may list by id)
ERR_SAMPLE_SIZE = ("Sample size must be a whole number from 1 to {limit} (at most every one of the {n} prompts that match is drawn), or 0 for all; got {size}.")


def prompts_select(*, category: str = "", tags: list[str] | None = None, search: str = "", sample_size: int = 0,
                   sample_seed: int = 0, exclude_held_out: bool = True, held_out_only: bool = False) -> list[int]:
    """Active prompt ids matching a filter, optionally a seeded random sample of them (reproducible)."""
    qs = Prompt.objects.filter(is_active=True)
    if category:
        qs = qs.filter(category__slug=category)
    if tags:
        qs = qs.filter(tags__contains=tags)
    if search:
        qs = qs.filter(text__icontains=search)
    if held_out_only:
        qs = qs.filter(is_held_out=True)
    elif exclude_held_out:
        qs = qs.filter(is_held_out=False)
    ids = list(qs.order_by("id").values_list("id", flat=True))
    if not 0 <= sample_size <= MAX_SAMPLE_SIZE:
        raise ValidationError({"sample_size": ERR_SAMPLE_SIZE.format(
            limit=MAX_SAMPLE_SIZE, n=len(ids), size=str(sample_size)[:24])})
    if sample_size and sample_size < len(ids):
        ids = sorted(random.Random(sample_seed).sample(ids, sample_size))
    return ids


@transaction.atomic
def round_create(*, name: str, policy_checkpoint: Checkpoint, prompt_ids: list[int], actor=None,
                 kind: str = Round.Kind.GENERATION, reference_checkpoint: Checkpoint | None = None,
                 preset: str | None = None, num_steps: int | None = None, cfg_scale: float | None = None,
                 shift: float | None = None, height: int | None = None, width: int | None = None,
                 num_frames: int | None = None, fps: int | None = None, seeds_per_prompt: int = 4, base_seed: int = 0,
                 annotators_per_group: int = 3, max_annotators_per_group: int | None = None, gold_rate: float = 0.0,
                 annotation_mode: str = Round.Mode.LABELS, require_full_playback: bool = True,
                 aspect_judgments: bool = False, segment_judgments: bool = False, segment_seconds: float = 1.0,
                 exclude_flagged: bool = True, launch: bool = False, dry_run: bool = False) -> Round:
    """Create a draft round (sampler settings default to the preset's); validated in full before anything is saved.
    With ``launch=True`` its generation is queued on commit. Raises ValidationError (every field's problems at once),
    creating nothing; ``dry_run=True`` validates only and returns the unsaved round."""
    preset = preset or policy_checkpoint.preset
    defaults = get_preset(preset) if preset in PRESET_NAMES else None
    errors: dict[str, list[str]] = {}
    if Round.objects.filter(name=name).exists():
        errors["name"] = [ERR_NAME_TAKEN.format(name=name)]
    if not (isinstance(segment_seconds, int | float) and 0.2 <= segment_seconds <= 60):
        errors["segment_seconds"] = [ERR_SEGMENT_SECONDS.format(value=segment_seconds)]

    def pick(value, default_attr: str, fallback):
        if value is not None:
            return value
        return getattr(defaults, default_attr, fallback) if defaults is not None else fallback

    sampler = defaults.sampler if defaults is not None else None
    round = Round(
        name=name, kind=kind, policy_checkpoint=policy_checkpoint, reference_checkpoint=reference_checkpoint,
        preset=preset,
        num_steps=num_steps if num_steps is not None else getattr(sampler, "num_steps", 50),
        cfg_scale=cfg_scale if cfg_scale is not None else getattr(sampler, "cfg_scale", 9.0),
        shift=shift if shift is not None else getattr(sampler, "shift", 13.0),
        height=pick(height, "height", 544), width=pick(width, "width", 992), num_frames=pick(num_frames, "num_frames", 204),
        fps=pick(fps, "fps", 25), seeds_per_prompt=seeds_per_prompt, base_seed=base_seed,
        annotators_per_group=annotators_per_group,
        max_annotators_per_group=max_annotators_per_group or max(annotators_per_group + 2, annotators_per_group),
        gold_rate=gold_rate, annotation_mode=annotation_mode, require_full_playback=require_full_playback,
        aspect_judgments=aspect_judgments, segment_judgments=segment_judgments, segment_seconds=segment_seconds,
        exclude_flagged=exclude_flagged, created_by=actor, config={"prompt_ids": list(prompt_ids)},
    )
    try:  # every problem at once: the generation checks and the model's own fields
        round_generation_validate(round=round, prompt_ids=prompt_ids)
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    try:  # the constraints repeat the checks above in database words: only when those passed
        round.full_clean(exclude=[*errors, *(["width"] if "height" in errors else [])], validate_unique=False, validate_constraints=not errors)
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    if dry_run:
        return round
    round.save()
    RoundEvent.objects.create(round=round, from_status="", to_status=Round.Status.DRAFT, actor=actor, note="created")
    if launch:
        round_generation_enqueue(round_id=round.id, actor=actor)
        round.refresh_from_db()
    return round
