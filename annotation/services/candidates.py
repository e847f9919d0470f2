"""Generation of a round's candidates: launch, per-candidate state machine, retry, cancel.

State machine of a :class:`~annotation.models.Candidate` (every write goes through a function here)::

    queued --mark_running--> running --mark_encoded--> encoded --mark_ready--> ready
       ^                        |  \\                       |
       |                        |   `--(progress, heartbeat: step i of N, every <= 0.5 s)
       `--retry_failed / requeue_stale / transient retry   `--> failed (error, attempts)     cancelled (round cancelled)

A candidate in ``running`` whose row has not been touched for ``STALE_RUNNING_S`` (the worker heartbeats every few
seconds while it holds the candidate) belongs to a dead worker: :func:`candidates_requeue_stale` puts it back. The
worker tasks are idempotent (deterministic object keys, unique (group, checkpoint, seed)), so redoing a job never
duplicates a candidate or an object.

A group becomes ``ready`` for annotation when none of its candidates is still pending and at least two are usable
(ready, and unflagged when the round excludes flagged candidates), and ``unusable`` when generation left fewer (failed
or excluded flagged candidates: retrying the failed ones, or allowing flagged ones, resolves it). The round goes ``generating -> annotating`` when
none of its candidates is pending.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from annotation import storage
from annotation.conf import videodpo
from annotation.models import Candidate, CandidateGroup, Checkpoint, Prompt, Round
from annotation.services import dispatch
from annotation.services.round_states import round_transition_apply
from model import layout
from model.presets import PRESET_NAMES, get_preset  # torch-free (model.config only)

_rng = random.SystemRandom()

# -- messages (reused by tests) ---------------------------------------------------------------------------------------
ERR_UNKNOWN_PRESET = "Unknown model preset {preset!r}; expected one of: {names}."
ERR_PRESET_MISMATCH = "Checkpoint {checkpoint!r} was made for preset {ckpt_preset!r}, but the round uses {preset!r}."
ERR_FRAMES = (
    "num_frames must be 1 or a multiple of {frame_len} (the VAE encodes {frame_len}-frame chunks); got {num_frames}, "
    "use {suggest}."
)
ERR_SPATIAL = "height and width must be positive multiples of {ratio}; got {height}x{width}, use {h}x{w}."
ERR_STEPS = "num_steps must be between 1 and 1000; got {num_steps}."
ERR_CFG = "cfg_scale must be >= 0; got {cfg_scale}."
ERR_SHIFT = "shift must be > 0; got {shift}."
ERR_FPS = "fps must be between 1 and 120; got {fps}."
ERR_NO_URI = "Checkpoint {checkpoint!r} has no URI."
ERR_CHECKPOINT_MISSING = "Checkpoint {checkpoint!r}: model root {uri} is missing {what}."
ERR_CHECKPOINT_UNREADABLE = "Checkpoint {checkpoint!r}: cannot list {uri}: {error}."
ERR_NO_PROMPTS = "The round has no prompts: pass prompt_ids or set round.config['prompt_ids']."
ERR_PROMPTS_MISSING = "Prompts {ids} do not exist."
ERR_PROMPTS_INACTIVE = "Prompts {ids} are inactive."
ERR_NO_REFERENCE = "An evaluation round needs a reference checkpoint."
ERR_ROUND_CLOSED = "Round {round!r} is {status}; generation cannot be launched."
ERR_SEEDS = "seeds_per_prompt must be between 2 and {max} (got {seeds})."
ERR_FRAMES_MAX = "num_frames must be at most {max} (got {num_frames})."
ERR_ANNOTATORS = "annotators_per_group must be between 1 and {max} (got {k})."
ERR_ANNOTATORS_CAP = "max_annotators_per_group must be at least k ({k}) and at most {max} (got {cap})."
ERR_GOLD_RATE = "gold_rate must be between 0 and 1 (got {gold_rate})."
# sane upper bounds: K candidates per prompt (each a full generation), frames (204 is the model's full clip)
MAX_SEEDS_PER_PROMPT = 16
MAX_FRAMES = 1024
MAX_ANNOTATORS_PER_GROUP = 100

# Statuses in which a candidate still waits for a worker.
PENDING = (Candidate.Status.QUEUED, Candidate.Status.RUNNING, Candidate.Status.ENCODED)
TERMINAL = (Candidate.Status.READY, Candidate.Status.FAILED, Candidate.Status.CANCELLED)
LAUNCHABLE_ROUND_STATUSES = (Round.Status.DRAFT, Round.Status.GENERATING, Round.Status.ANNOTATING, Round.Status.FAILED)


def stale_running_s() -> float:
    """Seconds without a heartbeat after which a running candidate is considered abandoned."""
    return videodpo().stale_running_s


# -- validation -------------------------------------------------------------------------------------------------------
def checkpoint_validate(*, checkpoint: Checkpoint) -> None:
    """Refuse a model root that lacks a file the pipeline needs (a missing file is not worth a GPU job); the layout and
    the listing (local or one S3 listing) are model.layout's."""
    uri = (checkpoint.uri or "").strip()
    if not uri:
        raise ValidationError(ERR_NO_URI.format(checkpoint=checkpoint.name))
    try:
        entries = layout.root_entries(uri, client=storage.s3_client() if layout.is_s3(uri) else None)
    except Exception as exc:  # noqa: BLE001 - any listing error is reported as a validation message
        raise ValidationError(ERR_CHECKPOINT_UNREADABLE.format(checkpoint=checkpoint.name, uri=uri, error=exc)) from exc
    if entries is None:
        raise ValidationError(ERR_CHECKPOINT_MISSING.format(checkpoint=checkpoint.name, uri=uri, what="everything (no such folder)"))
    missing = layout.missing_parts(entries)
    if missing:
        raise ValidationError(ERR_CHECKPOINT_MISSING.format(checkpoint=checkpoint.name, uri=uri, what=", ".join(missing)))


def _round_prompt_ids(round: Round, prompt_ids: Iterable[int] | None) -> list[int]:
    if prompt_ids is not None:
        ids = list(prompt_ids)
    elif round.config.get("prompt_ids"):
        ids = list(round.config["prompt_ids"])
    else:
        ids = list(round.groups.values_list("prompt_id", flat=True))
    return list(dict.fromkeys(int(i) for i in ids))  # unique, order kept


def round_checkpoints(round: Round) -> list[Checkpoint]:
    """The checkpoints a round samples: the policy; plus the reference (same seeds) for an evaluation round."""
    checkpoints = [round.policy_checkpoint]
    if round.kind == Round.Kind.EVALUATION and round.reference_checkpoint_id:
        checkpoints.append(round.reference_checkpoint)
    return checkpoints


def round_generation_validate(*, round: Round, prompt_ids: Iterable[int] | None = None, check_files: bool = True) -> list[int]:
    """Raise ``ValidationError`` (all problems at once, field by field) when the round cannot be generated.

    Checks: the preset exists and matches the checkpoints; sizes follow the model's rules (frames 1 or a multiple of
    the VAE chunk, height/width multiples of the spatial compression); sampler values; the prompts; the checkpoints'
    model roots hold every file the pipeline loads. Returns the prompt ids to generate."""
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if round.status not in LAUNCHABLE_ROUND_STATUSES:
        add("status", ERR_ROUND_CLOSED.format(round=round.name, status=round.status))
    preset = None
    if round.preset not in PRESET_NAMES:
        add("preset", ERR_UNKNOWN_PRESET.format(preset=round.preset, names=", ".join(PRESET_NAMES)))
    else:
        preset = get_preset(round.preset)
    if preset is not None:
        frame_len, ratio = preset.vae.frame_len, preset.vae.spatial_ratio * preset.dit.patch_size
        n = round.num_frames
        if n > MAX_FRAMES:
            add("num_frames", ERR_FRAMES_MAX.format(max=MAX_FRAMES, num_frames=n))
        elif n < 1 or (n != 1 and n % frame_len):
            add("num_frames", ERR_FRAMES.format(frame_len=frame_len, num_frames=n, suggest=max(n // frame_len * frame_len, frame_len)))
        h, w = round.height, round.width
        if h < ratio or w < ratio or h % ratio or w % ratio:
            add("height", ERR_SPATIAL.format(ratio=ratio, height=h, width=w, h=max(h // ratio * ratio, ratio),
                                             w=max(w // ratio * ratio, ratio)))
    if not 1 <= round.num_steps <= 1000:
        add("num_steps", ERR_STEPS.format(num_steps=round.num_steps))
    if round.cfg_scale is None or not math.isfinite(round.cfg_scale) or round.cfg_scale < 0:
        add("cfg_scale", ERR_CFG.format(cfg_scale=round.cfg_scale))
    if round.shift is None or not math.isfinite(round.shift) or round.shift <= 0:
        add("shift", ERR_SHIFT.format(shift=round.shift))
    if not 1 <= round.fps <= 120:
        add("fps", ERR_FPS.format(fps=round.fps))
    if not 2 <= round.seeds_per_prompt <= MAX_SEEDS_PER_PROMPT:
        add("seeds_per_prompt", ERR_SEEDS.format(seeds=round.seeds_per_prompt, max=MAX_SEEDS_PER_PROMPT))
    k, cap = round.annotators_per_group, round.max_annotators_per_group
    if not 1 <= k <= MAX_ANNOTATORS_PER_GROUP:
        add("annotators_per_group", ERR_ANNOTATORS.format(k=k, max=MAX_ANNOTATORS_PER_GROUP))
    elif cap is not None and not k <= cap <= MAX_ANNOTATORS_PER_GROUP:
        add("max_annotators_per_group", ERR_ANNOTATORS_CAP.format(k=k, cap=cap, max=MAX_ANNOTATORS_PER_GROUP))
    if round.gold_rate is None or not math.isfinite(round.gold_rate) or not 0 <= round.gold_rate <= 1:
        add("gold_rate", ERR_GOLD_RATE.format(gold_rate=round.gold_rate))
    if round.kind == Round.Kind.EVALUATION and not round.reference_checkpoint_id:
        add("reference_checkpoint", ERR_NO_REFERENCE)
    for checkpoint in round_checkpoints(round):
        field = "policy_checkpoint" if checkpoint.pk == round.policy_checkpoint_id else "reference_checkpoint"
        if preset is not None and checkpoint.preset != round.preset:
            add(field, ERR_PRESET_MISMATCH.format(checkpoint=checkpoint.name, ckpt_preset=checkpoint.preset, preset=round.preset))
        if check_files:
            try:
                checkpoint_validate(checkpoint=checkpoint)
            except ValidationError as exc:
                for message in exc.messages:
                    add(field, message)
    ids = _round_prompt_ids(round, prompt_ids)
    if not ids:
        add("prompts", ERR_NO_PROMPTS)
    else:
        found = dict(Prompt.objects.filter(id__in=ids).values_list("id", "is_active"))
        missing = [i for i in ids if i not in found]
        inactive = [i for i in ids if found.get(i) is False]
        if missing:
            add("prompts", ERR_PROMPTS_MISSING.format(ids=missing))
        if inactive:
            add("prompts", ERR_PROMPTS_INACTIVE.format(ids=inactive))
    if errors:
        raise ValidationError(errors)
    return ids


# -- launch -----------------------------------------------------------------------------------------------------------
def _round_transition(round: Round, to_status: str, *, actor=None, note: str = "") -> None:
    """The guarded state machine of annotation.services.round_states (an illegal move raises ValidationError)."""
    round_transition_apply(round=round, to_status=to_status, actor=actor, note=note)


def round_seeds(round: Round) -> list[int]:
    """The K seeds of every prompt in the round: ``base_seed + k``."""
    return [int(round.base_seed) + k for k in range(round.seeds_per_prompt)]


def _batches(candidates: list[Candidate]) -> list[list[int]]:
    """Job batches: one per (group, checkpoint) with the K seeds when ``VIDEODPO["BATCH_SEEDS"]``, else one each."""
    if not videodpo().batch_seeds:
        return [[c.id] for c in candidates]
    by_key: dict[tuple[int, int], list[int]] = {}
    for c in candidates:
        by_key.setdefault((c.group_id, c.checkpoint_id), []).append(c.id)
    return list(by_key.values())


def _enqueue(candidates: list[Candidate]) -> list[list[int]]:
    """Send the jobs once the surrounding transaction commits (the worker must see the rows)."""
    batches = _batches(sorted(candidates, key=lambda c: (c.group_id, c.checkpoint_id, c.seed)))
    dispatch.generation_dispatch_on_commit(batches)
    return batches


@transaction.atomic
def round_generation_enqueue(*, round_id: int, prompt_ids: Iterable[int] | None = None, actor=None) -> list[list[int]]:
    """Launch (or resume) a round's generation: validate, create the missing groups and candidates (prompts x seeds x
    checkpoints; idempotent), move the round to ``generating`` and enqueue every queued candidate on commit.

    Returns the enqueued batches of candidate ids. Raises ``ValidationError`` with nothing created or queued."""
    round = Round.objects.select_for_update(of=("self",)).select_related("policy_checkpoint", "reference_checkpoint").get(id=round_id)
    ids = round_generation_validate(round=round, prompt_ids=prompt_ids)
    prompt_ids_list = list(ids)
    if round.config.get("prompt_ids") != prompt_ids_list and prompt_ids is not None:
        round.config = {**round.config, "prompt_ids": sorted(set(round.config.get("prompt_ids", [])) | set(prompt_ids_list))}
        round.save(update_fields=["config", "updated_at"])
    seeds = round_seeds(round)
    checkpoints = round_checkpoints(round)
    for prompt_id in prompt_ids_list:
        group, _ = CandidateGroup.objects.get_or_create(
            round=round, prompt_id=prompt_id, defaults={"target_judgments": round.annotators_per_group}
        )
        existing = set(group.candidates.values_list("checkpoint_id", "seed"))
        missing = [
            Candidate(group=group, checkpoint=ckpt, seed=seed, progress_total=round.num_steps)
            for ckpt in checkpoints for seed in seeds if (ckpt.id, seed) not in existing
        ]
        if missing:
            # ids in random order: creation order must not tell policy from reference (or seeds apart) to anyone
            # who sees ids (blind evaluation)
            _rng.shuffle(missing)
            Candidate.objects.bulk_create(missing, ignore_conflicts=True)  # unique (group, checkpoint, seed)
            if group.status in REOPENABLE and group.judgments_count == 0 and group.active_reservations == 0:
                group.status = CandidateGroup.Status.GENERATING
                group.save(update_fields=["status", "updated_at"])
    _round_transition(round, Round.Status.GENERATING, actor=actor, note="generation launched")
    queued = list(
        Candidate.objects.filter(group__round=round, status=Candidate.Status.QUEUED).order_by("group_id", "seed")
    )
    return _enqueue(queued)


@transaction.atomic
def candidates_retry_failed(*, round_id: int, actor=None) -> int:
    """Put the round's failed candidates back in the queue (attempts are kept, the error cleared). Returns the count."""
    round = Round.objects.select_for_update().get(id=round_id)
    if round.status == Round.Status.CANCELLED:
        raise ValidationError(ERR_ROUND_CLOSED.format(round=round.name, status=round.status))
    failed = list(
        Candidate.objects.select_for_update().filter(group__round=round, status=Candidate.Status.FAILED)
    )
    if not failed:
        return 0
    Candidate.objects.filter(id__in=[c.id for c in failed]).update(
        status=Candidate.Status.QUEUED, error="", progress_step=0, screening_flags=[], finished_at=None,
        updated_at=timezone.now(),
    )
    # groups nobody has started to annotate wait for their retried candidates
    CandidateGroup.objects.filter(
        id__in={c.group_id for c in failed}, status__in=REOPENABLE, judgments_count=0, active_reservations=0
    ).update(status=CandidateGroup.Status.GENERATING)
    if round.status in (Round.Status.ANNOTATING, Round.Status.FAILED):
        _round_transition(round, Round.Status.GENERATING, actor=actor, note=f"retry of {len(failed)} failed candidates")
    for c in failed:
        c.status = Candidate.Status.QUEUED
    _enqueue(failed)
    return len(failed)


@transaction.atomic
def round_generation_cancel(*, round_id: int, actor=None, note: str = "") -> int:
    """Cancel a round: its pending candidates become ``cancelled``; queued jobs return at once and running ones stop
    at their next denoising step. Returns the number of candidates cancelled."""
    round = Round.objects.select_for_update().get(id=round_id)
    count = Candidate.objects.filter(group__round=round, status__in=PENDING).update(
        status=Candidate.Status.CANCELLED, finished_at=timezone.now(), updated_at=timezone.now()
    )
    _round_transition(round, Round.Status.CANCELLED, actor=actor, note=note or "cancelled")
    return count


@transaction.atomic
def candidates_requeue_stale(*, older_than_s: float | None = None, round_id: int | None = None) -> int:
    """Re-enqueue candidates abandoned by a dead worker: ``running``/``encoded`` with no heartbeat for
    ``older_than_s`` (default ``VIDEODPO["STALE_RUNNING_S"]``), and ``queued`` ones not touched for as long (a
    message lost with a broker that cannot redeliver, like the embedded filesystem transport). Returns the count."""
    cutoff = timezone.now() - timedelta(seconds=stale_running_s() if older_than_s is None else older_than_s)
    qs = Candidate.objects.select_for_update(skip_locked=True).filter(
        status__in=PENDING, updated_at__lt=cutoff
    ).exclude(group__round__status=Round.Status.CANCELLED)
    if round_id is not None:
        qs = qs.filter(group__round_id=round_id)
    stale = list(qs)
    if not stale:
        return 0
    Candidate.objects.filter(id__in=[c.id for c in stale]).update(
        status=Candidate.Status.QUEUED, progress_step=0, updated_at=timezone.now()
    )
    _enqueue(stale)
    return len(stale)


# -- the worker's transitions -----------------------------------------------------------------------------------------
def _round_cancelled(candidate: Candidate) -> bool:
    return Round.objects.filter(id=candidate.group.round_id, status=Round.Status.CANCELLED).exists()


@transaction.atomic
def candidate_mark_running(*, candidate_id: int, total_steps: int | None = None, lease_s: float | None = None) -> bool:
    """Take a candidate for this worker: ``queued``/``encoded``/stale ``running`` -> ``running``, ``attempts + 1``.

    Returns False (do nothing) when it is finished, failed, cancelled (or its round is), or held by a live worker
    (``running`` with a heartbeat younger than ``lease_s``)."""
    candidate = Candidate.objects.select_for_update(of=("self",)).select_related("group").filter(id=candidate_id).first()
    if candidate is None or candidate.status in TERMINAL:
        return False
    if _round_cancelled(candidate):
        candidate.status, candidate.finished_at = Candidate.Status.CANCELLED, timezone.now()
        candidate.save(update_fields=["status", "finished_at", "updated_at"])
        return False
    lease = stale_running_s() if lease_s is None else lease_s
    if candidate.status == Candidate.Status.RUNNING and candidate.updated_at > timezone.now() - timedelta(seconds=lease):
        return False
    candidate.status = Candidate.Status.RUNNING
    candidate.attempts = F("attempts") + 1
    candidate.progress_step = 0
    if total_steps is not None:
        candidate.progress_total = total_steps
    candidate.started_at = timezone.now()
    candidate.error = ""
    candidate.save(update_fields=["status", "attempts", "progress_step", "progress_total", "started_at", "error", "updated_at"])
    return True


def candidate_progress(*, candidate_ids: Iterable[int], step: int, total: int) -> int:
    """Record denoising step ``step`` of ``total`` (also the heartbeat). Returns how many are still running: 0 means
    every candidate was cancelled (or taken over), and the worker should stop."""
    return Candidate.objects.filter(id__in=list(candidate_ids), status=Candidate.Status.RUNNING).update(
        progress_step=step, progress_total=total, updated_at=timezone.now()
    )


def candidate_heartbeat(*, candidate_ids: Iterable[int]) -> int:
    """Touch running candidates so :func:`candidates_requeue_stale` leaves them alone. Returns how many still run."""
    return Candidate.objects.filter(
        id__in=list(candidate_ids), status__in=(Candidate.Status.RUNNING, Candidate.Status.ENCODED)
    ).update(updated_at=timezone.now())


@transaction.atomic
def candidate_mark_encoded(
    *, candidate_id: int, video_uri: str, poster_uri: str, sprite_uri: str, duration_s: float, num_frames: int,
    fps: float, sprite_layout: dict | None = None,
) -> bool:
    """``running -> encoded``: the video, poster and sprite are in storage. False when no longer running."""
    candidate = Candidate.objects.select_for_update().filter(id=candidate_id).first()
    if candidate is None or candidate.status not in (Candidate.Status.RUNNING, Candidate.Status.ENCODED):
        return False
    candidate.status = Candidate.Status.ENCODED
    candidate.video_uri, candidate.poster_uri, candidate.sprite_uri = video_uri, poster_uri, sprite_uri
    candidate.duration_s, candidate.num_frames, candidate.fps = duration_s, num_frames, fps
    candidate.progress_step = candidate.progress_total
    if sprite_layout is not None:
        candidate.screening_metrics = {**candidate.screening_metrics, "sprite": sprite_layout}
    candidate.full_clean(validate_unique=False, validate_constraints=False)
    candidate.save()
    return True


@transaction.atomic
def candidate_mark_ready(
    *, candidate_id: int, latent_uri: str, text_embedding_uri: str, screening_flags: list[str],
    screening_metrics: dict, prompt_truncated: bool = False,
) -> bool:
    """``encoded -> ready`` with the latent, the text embeddings, the screening result. False when not encoded."""
    candidate = Candidate.objects.select_for_update(of=("self",)).select_related("group").filter(id=candidate_id).first()
    if candidate is None or candidate.status != Candidate.Status.ENCODED:
        return False
    candidate.status = Candidate.Status.READY
    candidate.latent_uri, candidate.text_embedding_uri = latent_uri, text_embedding_uri
    candidate.screening_flags = sorted(set(screening_flags))
    candidate.screening_metrics = {**candidate.screening_metrics, **screening_metrics}
    candidate.prompt_truncated = prompt_truncated
    candidate.finished_at = timezone.now()
    candidate.error = ""
    candidate.full_clean(validate_unique=False, validate_constraints=False)
    candidate.save()
    group_refresh(group_id=candidate.group_id)
    return True


@transaction.atomic
def candidate_mark_failed(*, candidate_id: int, error: str, flags: Iterable[str] = ()) -> bool:
    """Any non-terminal status -> ``failed`` with the error (the attempt count is already on the row)."""
    candidate = Candidate.objects.select_for_update().filter(id=candidate_id).first()
    if candidate is None or candidate.status in TERMINAL:
        return False
    candidate.status = Candidate.Status.FAILED
    candidate.error = error[-4000:]
    candidate.finished_at = timezone.now()
    if flags:
        candidate.screening_flags = sorted(set(candidate.screening_flags) | set(flags))
    candidate.save(update_fields=["status", "error", "finished_at", "screening_flags", "updated_at"])
    group_refresh(group_id=candidate.group_id)
    return True


@transaction.atomic
def candidate_requeue(*, candidate_id: int, error: str = "") -> bool:
    """``running``/``encoded`` -> ``queued`` before a retry of a transient error (so the retry may take it again)."""
    return bool(
        Candidate.objects.filter(
            id=candidate_id, status__in=(Candidate.Status.RUNNING, Candidate.Status.ENCODED)
        ).update(status=Candidate.Status.QUEUED, error=error[-4000:], updated_at=timezone.now())
    )


def _usable(round: Round) -> Q:
    q = Q(status=Candidate.Status.READY)
    if round.exclude_flagged:
        q &= Q(screening_flags=[])
    return q


# Groups whose status follows their candidates (the other statuses belong to annotation and review).
DERIVED_GROUP_STATUSES = (CandidateGroup.Status.GENERATING, CandidateGroup.Status.UNUSABLE)
# groups that wait again for new or retried candidates when nobody has started on them; a label selection's decision
# (held back, pseudo-labelled: annotation.services.selection) and reviewed or finished groups stay as they are
REOPENABLE = (CandidateGroup.Status.READY, CandidateGroup.Status.UNUSABLE)


def _group_status_derive(group: CandidateGroup) -> str:
    """What a group's candidates say: ``generating`` while one is pending, else ``ready`` with at least two usable
    ones, else ``unusable`` (failed or flagged-and-excluded candidates left fewer than two to compare)."""
    candidates = Candidate.objects.filter(group=group)
    if candidates.filter(status__in=PENDING).exists():
        return CandidateGroup.Status.GENERATING
    if candidates.filter(_usable(group.round)).count() >= 2:
        return CandidateGroup.Status.READY
    return CandidateGroup.Status.UNUSABLE


@transaction.atomic
def group_refresh(*, group_id: int) -> str:
    """Re-derive a generating (or unusable) group's status from its candidates (idempotent; the group row is locked,
    so two workers finishing sibling candidates serialise here and the second sees the first's commit): ``ready``
    once nothing is pending and at least two candidates are usable, ``unusable`` when fewer are, and close the round's
    generation once nothing in the round is pending. Returns the group's status."""
    group = CandidateGroup.objects.select_for_update(of=("self",)).select_related("round").get(id=group_id)
    if group.status in DERIVED_GROUP_STATUSES:
        status = _group_status_derive(group)
        if status != group.status:
            group.status = status
            group.save(update_fields=["status", "updated_at"])
    round = Round.objects.select_for_update().get(id=group.round_id)
    if round.status == Round.Status.GENERATING and not Candidate.objects.filter(
        group__round=round, status__in=PENDING
    ).exists():
        _round_transition(round, Round.Status.ANNOTATING, note="generation finished")
    return group.status


def groups_refresh(*, round_id: int | None = None) -> int:
    """Repair: re-derive every generating/unusable group of live rounds (or of ``round_id``) from its candidates, e.g.
    after the round's ``exclude_flagged`` changed, or groups an older version left ``generating``. Idempotent;
    run from the round page's "Re-check groups" and every minute by the beat. Returns how many groups changed."""
    pending = Candidate.objects.filter(group=OuterRef("pk"), status__in=PENDING)
    # a generating group with a pending candidate is waiting, not stuck: leave it to its worker
    groups = CandidateGroup.objects.annotate(has_pending=Exists(pending)).filter(
        Q(status=CandidateGroup.Status.UNUSABLE) | Q(status=CandidateGroup.Status.GENERATING, has_pending=False))
    groups = groups.filter(round__status__in=(Round.Status.GENERATING, Round.Status.ANNOTATING))
    if round_id is not None:
        groups = groups.filter(round_id=round_id)
    before = dict(groups.values_list("id", "status"))
    return sum(group_refresh(group_id=gid) != status for gid, status in before.items())
