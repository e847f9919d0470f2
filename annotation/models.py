"""The domain model of the whole loop. Invariants are database constraints; no business logic here
(it lives in ``services``), so every model is a plain record with its indexes."""

from __future__ import annotations

import math
import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.functions import RandomUUID
from django.contrib.postgres.indexes import GinIndex
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from annotation.agreement import label_aspects, label_segments, pair_aspects, pair_segments


def segment_count(*, seconds: float, segment_seconds: float) -> int:
    """How many equal segments tile a clip of ``seconds``: the count whose length is nearest ``segment_seconds``
    (at least one). Equal segments are what the trainer assumes (``dpo.losses.segment_frame_weights``), and no
    segment is a sliver: a 2.13 s clip in 1 s segments has 2 of 1.06 s, not a third of 0.13 s."""
    return max(1, math.floor(seconds / segment_seconds + 0.5 + 1e-9))


def validate_label_segments(value) -> None:
    """A candidate label's segments: a list of preferred / neutral / non_preferred, one per segment."""
    if not isinstance(value, list) or label_segments(value) != value:
        raise ValidationError("Expected a list of preferred, neutral or non_preferred, one per segment.")


def validate_pair_segments(value) -> None:
    """A pair's segments: a list of chosen / rejected / same, one per segment."""
    if not isinstance(value, list) or pair_segments(value) != value:
        raise ValidationError("Expected a list of chosen, rejected or same, one per segment.")


def validate_label_aspects(value) -> None:
    """A candidate label's aspects: {vq | mq | ta: preferred | neutral | non_preferred} (admin edits are checked)."""
    if not isinstance(value, dict) or label_aspects(value) != value:
        raise ValidationError("Expected an object mapping vq, mq or ta to preferred, neutral or non_preferred.")


def validate_pair_aspects(value) -> None:
    """A pair's aspects: {vq | mq | ta: chosen | rejected | same}."""
    if not isinstance(value, dict) or pair_aspects(value) != value:
        raise ValidationError("Expected an object mapping vq, mq or ta to chosen, rejected or same.")


class TimeStamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


# --------------------------------------------------------------------------------------------------------------------
# Prompt pool
# --------------------------------------------------------------------------------------------------------------------
class Category(models.Model):
    """A prompt category; the 11 of Step-Video-T2V-Eval are created by a data migration."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=128)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


class PromptSet(TimeStamped):
    """A named set of prompts with its annotation guidelines (markdown)."""

    name = models.CharField(max_length=128, unique=True)
    guidelines_md = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return self.name


class Prompt(TimeStamped):
    class Language(models.TextChoices):
        EN = "en", "English"
        ZH = "zh", "Chinese"
        MIXED = "mixed", "Mixed"

    class Source(models.TextChoices):
        TRAINING_CAPTION = "training_caption", "Sampled from training captions"
        HAND_WRITTEN = "hand_written", "Hand-written"

    text = models.TextField()
    # sha256 of the normalized text (NFKC, casefold, collapsed whitespace): the dedupe key.
    text_hash = models.CharField(max_length=64, unique=True)
    language = models.CharField(max_length=8, choices=Language.choices, default=Language.EN)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="prompts")
    prompt_set = models.ForeignKey(PromptSet, null=True, blank=True, on_delete=models.SET_NULL, related_name="prompts")
    source = models.CharField(max_length=32, choices=Source.choices, default=Source.HAND_WRITTEN)
    tags = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    is_active = models.BooleanField(default=True)
    is_held_out = models.BooleanField(default=False, help_text="Reserved for evaluation rounds, never trained on.")

    class Meta:
        indexes = [
            models.Index(fields=["is_active", "category"], name="prompt_active_category"),
            GinIndex(fields=["tags"], name="prompt_tags_gin"),
        ]
        constraints = [models.CheckConstraint(condition=~Q(text=""), name="prompt_text_not_empty")]

    def __str__(self) -> str:
        return self.text[:80]


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints and rounds
# --------------------------------------------------------------------------------------------------------------------
class Checkpoint(TimeStamped):
    class Kind(models.TextChoices):
        BASE = "base", "Base"
        DPO = "dpo", "DPO"
        AVERAGED = "averaged", "Averaged"

    name = models.CharField(max_length=128, unique=True)
    uri = models.CharField(max_length=1024, help_text="Model root in the official layout (local path, file:// or s3://).")
    preset = models.CharField(max_length=64, default="tiny")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.BASE)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    reference = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    averaged_from = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="averaged_into")
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(parent=F("id")), name="checkpoint_not_own_parent"),
        ]

    def __str__(self) -> str:
        return self.name


class Round(TimeStamped):
    class Kind(models.TextChoices):
        GENERATION = "generation", "Generation (K seeds of one checkpoint)"
        EVALUATION = "evaluation", "Evaluation (policy vs reference, same noise)"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        GENERATING = "generating", "Generating"
        ANNOTATING = "annotating", "Annotating"
        TRAINING = "training", "Training"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Mode(models.TextChoices):
        LABELS = "labels", "Preferred / non-preferred / neutral per candidate"
        BEST_WORST = "best_worst", "Best and worst"
        RANKING = "ranking", "Full ranking"

    name = models.CharField(max_length=128, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.GENERATION)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    policy_checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="policy_rounds")
    reference_checkpoint = models.ForeignKey(
        Checkpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="reference_rounds"
    )
    # Sampler settings (the preset's defaults unless overridden).
    preset = models.CharField(max_length=64, default="tiny")
    num_steps = models.PositiveIntegerField()
    cfg_scale = models.FloatField()
    shift = models.FloatField()
    height = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    num_frames = models.PositiveIntegerField()
    fps = models.PositiveIntegerField(default=25)
    seeds_per_prompt = models.PositiveSmallIntegerField(default=4)
    base_seed = models.BigIntegerField(default=0)
    # Annotation settings.
    annotators_per_group = models.PositiveSmallIntegerField(default=3)
    max_annotators_per_group = models.PositiveSmallIntegerField(default=5, help_text="Adaptive cap on disagreement.")
    gold_rate = models.FloatField(default=0.0)
    annotation_mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.LABELS)
    require_full_playback = models.BooleanField(default=True)
    aspect_judgments = models.BooleanField(
        default=False, db_default=False, help_text="Besides the overall answer, annotators mark visual quality, motion quality and text "
        "alignment per candidate (better / same / worse); pairs and exports carry the per-aspect outcomes."
    )
    segment_judgments = models.BooleanField(
        default=False, db_default=False, help_text="Annotators also mark which candidates are better per segment of "
        "the timeline (DenseDPO); pairs, exports and the trainer carry the per-segment outcomes."
    )
    segment_seconds = models.FloatField(default=1.0, db_default=1.0, help_text="Length of a segment (seconds).")
    exclude_flagged = models.BooleanField(default=True, help_text="Hide candidates flagged by automatic screening.")
    config = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    @property
    def segment_count(self) -> int:
        """Segments of this round's clips (0 without segment judgments): the clip length over the segment length."""
        if not self.segment_judgments:
            return 0
        return segment_count(seconds=self.clip_seconds, segment_seconds=self.segment_seconds)

    @property
    def clip_seconds(self) -> float:
        return self.num_frames / max(self.fps, 1)

    @property
    def segment_length(self) -> float | None:
        """The length of each of the round's equal segments (s): the clip over ``segment_count``, near the asked
        ``segment_seconds``; None without segment judgments."""
        return self.clip_seconds / self.segment_count if self.segment_count else None

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(segment_seconds__gte=0.2) & Q(segment_seconds__lte=60),
                                   name="round_segment_seconds_range"),
            models.CheckConstraint(condition=Q(seeds_per_prompt__gte=2), name="round_at_least_two_seeds"),
            models.CheckConstraint(condition=Q(annotators_per_group__gte=1), name="round_at_least_one_annotator"),
            models.CheckConstraint(
                condition=Q(max_annotators_per_group__gte=F("annotators_per_group")), name="round_cap_above_k"
            ),
            models.CheckConstraint(condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="round_gold_rate_0_1"),
            models.CheckConstraint(condition=Q(height__gt=0) & Q(width__gt=0) & Q(num_frames__gt=0), name="round_size_positive"),
        ]

    def __str__(self) -> str:
        return self.name


class RoundEvent(models.Model):
    """One guarded status transition of a round: who, when, from, to."""

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=16)
    to_status = models.CharField(max_length=16)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    note = models.TextField(blank=True, default="")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["round", "at"], name="roundevent_round_at")]


class CandidateGroup(TimeStamped):
    """The unit of annotation work: one prompt's candidates in one round."""

    class Status(models.TextChoices):
        GENERATING = "generating", "Generating"
        READY = "ready", "Ready for annotation"
        # generation finished with fewer than two usable candidates (failed, or flagged and excluded): never served;
        # retry-failed, more seeds or allowing flagged candidates resolves it (annotation.services.candidates)
        UNUSABLE = "unusable", "Too few usable candidates"
        DONE = "done", "Enough judgments"
        REVIEW = "review", "In review"
        # left out of the label budget by the round's selection (annotation.services.selection): not served
        HELD = "held", "Held back (outside the label budget)"

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="groups")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="groups")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.GENERATING)
    # The prompt's text as it was for this group (its videos and its annotators) when the prompt was edited later;
    # blank while the prompt still has that text. Exports and pages read this, so an edit never rewrites history.
    prompt_text = models.TextField(blank=True, db_default="", default="")
    is_gold = models.BooleanField(default=False)
    gold_answer = models.JSONField(default=dict, blank=True, help_text="{'preferred': [cand ids], 'non_preferred': [...]}")
    # Denormalised counters kept by services (so "next group" never counts rows).
    target_judgments = models.PositiveSmallIntegerField(default=3)
    active_reservations = models.PositiveSmallIntegerField(default=0)
    judgments_count = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["round", "prompt"], name="group_unique_round_prompt")]
        indexes = [
            # the annotator queue: ready groups of a round that still need judgments, oldest first
            models.Index(fields=["status", "round", "id"], name="group_queue"),
        ]

    def __str__(self) -> str:
        return f"group {self.pk} (round {self.round_id})"


class Candidate(TimeStamped):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        ENCODED = "encoded", "Encoded"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    group = models.ForeignKey(CandidateGroup, on_delete=models.CASCADE, related_name="candidates")
    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="candidates")
    seed = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    video_uri = models.CharField(max_length=1024, blank=True, default="")
    poster_uri = models.CharField(max_length=1024, blank=True, default="")
    sprite_uri = models.CharField(max_length=1024, blank=True, default="")
    latent_uri = models.CharField(max_length=1024, blank=True, default="")
    text_embedding_uri = models.CharField(max_length=1024, blank=True, default="")
    duration_s = models.FloatField(null=True, blank=True)
    num_frames = models.PositiveIntegerField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)
    screening_flags = ArrayField(models.CharField(max_length=32), default=list, blank=True)
    screening_metrics = models.JSONField(default=dict, blank=True)
    prompt_truncated = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # one seed per group and checkpoint (an evaluation group holds the same seed for two checkpoints)
            models.UniqueConstraint(fields=["group", "checkpoint", "seed"], name="candidate_unique_seed"),
            models.CheckConstraint(
                condition=~Q(status="ready") | ~Q(video_uri=""), name="candidate_ready_has_video"
            ),
        ]
        indexes = [models.Index(fields=["group", "status"], name="candidate_group_status")]

    def __str__(self) -> str:
        return f"candidate {self.pk} (seed {self.seed})"


# --------------------------------------------------------------------------------------------------------------------
# Annotation
# --------------------------------------------------------------------------------------------------------------------
class AnnotatorProfile(models.Model):
    """Per-user annotation state: a stable pseudonym for exports, and the automatic pause."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotator_profile")
    pseudonym = models.CharField(max_length=32, unique=True)
    is_paused = models.BooleanField(default=False)
    paused_reason = models.TextField(blank=True, default="")
    paused_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.pseudonym


class FlawTag(models.Model):
    """The admin-editable flaw taxonomy (defaults created by a data migration)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=128)
    description = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name


class Assignment(models.Model):
    class Status(models.TextChoices):
        RESERVED = "reserved", "Reserved"
        SUBMITTED = "submitted", "Submitted"
        EXPIRED = "expired", "Expired"

    group = models.ForeignKey(CandidateGroup, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RESERVED)
    # the reservation's only annotator-facing name (pages, JSON, media links): random, so it carries no order; the
    # database id stays internal. db_default for rows written in SQL (benchmarks, the migration's existing rows).
    public_id = models.UUIDField(default=uuid.uuid4, db_default=RandomUUID(), unique=True, editable=False)
    shown_order = ArrayField(models.BigIntegerField(), help_text="Candidate ids in the order shown (position bias).")
    reserved_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # never the same group twice to one annotator
            models.UniqueConstraint(fields=["group", "annotator"], name="assignment_unique_group_annotator"),
        ]
        indexes = [
            models.Index(fields=["annotator", "status"], name="assignment_annotator_status"),
            models.Index(fields=["status", "expires_at"], name="assignment_expiry"),
        ]


class Judgment(models.Model):
    class Outcome(models.TextChoices):
        LABELLED = "labelled", "Labelled"
        ALL_GOOD = "all_good", "All equally good"
        ALL_BAD = "all_bad", "All bad"
        SKIPPED = "skipped", "Skipped"

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="judgment")
    group = models.ForeignKey(CandidateGroup, on_delete=models.CASCADE, related_name="judgments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="judgments")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    skip_reason = models.TextField(blank=True, default="")
    time_spent_ms = models.PositiveIntegerField(default=0)
    reviewer_decision = models.BooleanField(default=False, help_text="Entered by a reviewer in the review queue.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(outcome="skipped") | ~Q(skip_reason=""), name="judgment_skip_has_reason"
            ),
        ]
        indexes = [
            models.Index(fields=["annotator", "created_at"], name="judgment_annotator_time"),
            models.Index(fields=["group"], name="judgment_group"),
        ]


class CandidateLabel(models.Model):
    class Label(models.TextChoices):
        PREFERRED = "preferred", "Preferred"
        NON_PREFERRED = "non_preferred", "Non-preferred"
        NEUTRAL = "neutral", "Neutral"

    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="labels")
    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="labels")
    label = models.CharField(max_length=16, choices=Label.choices, default=Label.NEUTRAL)
    rank = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1 = best (full-ranking mode).")
    shown_position = models.PositiveSmallIntegerField()
    playback_coverage = models.FloatField(default=0.0, help_text="Fraction of the clip played, 0..1.")
    aspects = models.JSONField(
        default=dict, db_default={}, blank=True, validators=[validate_label_aspects], help_text="Per-aspect label (rounds with aspect judgments): {'vq' | 'mq' | 'ta': "
        "'preferred' | 'neutral' | 'non_preferred'}; empty otherwise."
    )
    segments = models.JSONField(
        default=list, db_default=[], blank=True, validators=[validate_label_segments],
        help_text="Per-segment label (rounds with segment judgments), one per segment of the clip; empty otherwise."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["judgment", "candidate"], name="label_unique_candidate"),
            models.CheckConstraint(
                condition=Q(playback_coverage__gte=0) & Q(playback_coverage__lte=1), name="label_coverage_0_1"
            ),
        ]
        indexes = [models.Index(fields=["candidate"], name="label_candidate")]


class FlawMark(models.Model):
    label = models.ForeignKey(CandidateLabel, on_delete=models.CASCADE, related_name="flaws")
    tag = models.ForeignKey(FlawTag, on_delete=models.PROTECT, related_name="+")
    time_s = models.FloatField(null=True, blank=True, help_text="Optional time in the clip (seconds).")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(time_s__isnull=True) | Q(time_s__gte=0), name="flaw_time_positive"),
            # PostgreSQL orders NaN above every number: "< Infinity" refuses both NaN and Infinity
            models.CheckConstraint(condition=Q(time_s__isnull=True) | Q(time_s__lt=float("inf")), name="flaw_time_finite"),
        ]


class PreferencePair(TimeStamped):
    class Source(models.TextChoices):
        HUMAN = "human", "Annotators"
        REVIEWER = "reviewer", "Reviewer decision"
        MODEL = "model", "Scripted / model annotator"

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="pairs")
    group = models.ForeignKey(CandidateGroup, on_delete=models.CASCADE, related_name="pairs")
    chosen = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="pairs_chosen")
    rejected = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="pairs_rejected")
    weight = models.FloatField(default=1.0)
    agreement = models.FloatField(default=1.0, help_text="Fraction of the group's annotators who imply this order.")
    votes_for = models.PositiveSmallIntegerField(default=0)
    votes_against = models.PositiveSmallIntegerField(default=0)
    n_annotators = models.PositiveSmallIntegerField(default=0)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.HUMAN)
    aspects = models.JSONField(
        default=dict, db_default={}, blank=True, validators=[validate_pair_aspects], help_text="Per-aspect majority outcome of the pair's annotators: {'vq' | 'mq' | "
        "'ta': 'chosen' | 'rejected' | 'same'}; empty when the round collected no aspect judgments."
    )
    segments = models.JSONField(
        default=list, db_default=[], blank=True, validators=[validate_pair_segments],
        help_text="Per-segment majority outcome ('chosen' | 'rejected' | 'same', one per segment); empty otherwise."
    )
    source_judgments = models.ManyToManyField(Judgment, blank=True, related_name="pairs")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(chosen=F("rejected")), name="pair_chosen_not_rejected"),
            models.UniqueConstraint(fields=["chosen", "rejected"], name="pair_unique_order"),
            models.CheckConstraint(condition=Q(weight__gte=0), name="pair_weight_nonnegative"),
            models.CheckConstraint(condition=Q(agreement__gte=0) & Q(agreement__lte=1), name="pair_agreement_0_1"),
        ]
        indexes = [models.Index(fields=["round", "agreement"], name="pair_round_agreement")]


class ReviewItem(TimeStamped):
    """A group whose annotators disagree; a reviewer decides."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    group = models.OneToOneField(CandidateGroup, on_delete=models.CASCADE, related_name="review")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    reason = models.TextField(blank=True, default="")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)


# --------------------------------------------------------------------------------------------------------------------
# Exports and DPO runs
# --------------------------------------------------------------------------------------------------------------------
class Export(TimeStamped):
    class Format(models.TextChoices):
        TRL = "trl", "TRL preference (JSONL)"
        TRL_PARQUET = "trl_parquet", "TRL preference (Parquet)"
        PICKAPIC = "pickapic", "Pick-a-Pic / Diffusion-DPO (Parquet)"
        VIDEOALIGN = "videoalign", "VideoAlign CSV"
        VIDEODPO = "videodpo", "VideoDPO metadata.json + pair.json"
        HF_DATASETS = "hf_datasets", "Hugging Face datasets layout"
        RAW = "raw", "Raw judgments (JSONL)"
        MANIFEST = "manifest", "DPO trainer manifest (Parquet)"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    format = models.CharField(max_length=16, choices=Format.choices)
    filter = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    version = models.PositiveIntegerField(default=1)
    progress = models.FloatField(default=0.0)
    row_count = models.PositiveBigIntegerField(default=0)
    content_hash = models.CharField(max_length=64, blank=True, default="")
    uri = models.CharField(max_length=1024, blank=True, default="")
    datasheet = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["format", "version"], name="export_unique_version")]


class PromptImport(TimeStamped):
    """A prompt import too big for one request: the upload is stored first, then a worker (queue ``default``) streams
    it, validates every row and commits all of its new prompts in one transaction (or none)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        REJECTED = "rejected", "Rejected"  # rows rejected: nothing imported
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    filename = models.CharField(max_length=255, blank=True, default="")
    format = models.CharField(max_length=8)
    size_bytes = models.PositiveBigIntegerField(default=0)
    content_hash = models.CharField(max_length=64, db_index=True, help_text="sha256 of the uploaded file")
    upload_key = models.CharField(max_length=1024)
    options = models.JSONField(default=dict, blank=True)  # category, prompt_set_id, held_out, tags, dry_run
    progress = models.FloatField(default=0.0)
    lines_done = models.PositiveBigIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    finished_at = models.DateTimeField(null=True, blank=True)


class TrainingRun(TimeStamped):
    """What every training job the app launches keeps (DPO runs, reward-model runs): its state machine, the manifest
    it trained on, live progress, the output, and who started it. The worker updates these through the services."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    name = models.CharField(max_length=128, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    pairs_count = models.PositiveIntegerField(default=0)
    config = models.JSONField(default=dict, blank=True)
    metrics_summary = models.JSONField(default=dict, blank=True)
    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    output_uri = models.CharField(max_length=1024, blank=True, default="")
    error = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.name


class DPORun(TrainingRun):
    """A Flow-DPO run (``dpo.trainer``): its pairs (rounds, filter, manifest export), the checkpoints it starts from
    and is held against, and the checkpoint it produces."""

    init_checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="dpo_runs_init")
    reference_checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="dpo_runs_reference")
    output_checkpoint = models.OneToOneField(
        Checkpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_by"
    )
    data_rounds = models.ManyToManyField(Round, blank=True, related_name="dpo_runs")
    pair_filter = models.JSONField(default=dict, blank=True)
    # the run's training data: a manifest export of the run's pair filter and weighting (versioned, content-hashed)
    manifest_export = models.ForeignKey(
        Export, null=True, blank=True, on_delete=models.PROTECT, related_name="dpo_runs"
    )


class DPOMetric(models.Model):
    """One logged training step (TRL metric names in ``values``); the run page draws curves from these."""

    run = models.ForeignKey(DPORun, on_delete=models.CASCADE, related_name="metric_rows")
    step = models.PositiveIntegerField()
    values = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="dpometric_unique_step")]
        ordering = ["step"]


class RewardRun(TrainingRun):
    """A reward model trained from preference pairs: its data (rounds, the data export), its backbone, its live curve
    (``RewardMetric``) and held-out accuracy per aspect (``metrics_summary``; ``output_uri``: the folder).

    Backbones: ``latent`` (``dpo.reward``: a head on ``init_checkpoint``'s DiT features, trained on a manifest export;
    ``config``: LatentRewardConfig fields) and ``vlm`` (``dpo.reward_vlm``: a video language model read from
    ``vlm_root``, LoRA-tuned on a VideoAlign export of the decoded videos; ``config``: VLMRewardConfig fields)."""

    class Backbone(models.TextChoices):
        LATENT = "latent", "Latent (the DiT's own features)"
        VLM = "vlm", "Video language model (Qwen2-VL / Qwen2.5-VL)"

    backbone = models.CharField(max_length=8, choices=Backbone.choices, default=Backbone.LATENT)
    init_checkpoint = models.ForeignKey(Checkpoint, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="reward_runs",
                                        help_text="The model whose DiT features the reward head reads (latent runs).")
    vlm_root = models.CharField(max_length=1024, blank=True, default="",
                                help_text="The Hugging Face folder (a path or s3:// URI) of the VLM (vlm runs).")
    data_rounds = models.ManyToManyField(Round, blank=True, related_name="reward_runs")
    # the run's data: a manifest export (latent) or a VideoAlign export (vlm) of its pair filter
    manifest_export = models.ForeignKey(Export, null=True, blank=True, on_delete=models.PROTECT, related_name="reward_runs")
    aspect_pairs = models.JSONField(default=dict, blank=True, help_text="Labelled pairs per trained aspect.")


class RewardMetric(models.Model):
    """One logged step of a reward run (loss, the tie parameters): the run page's curve."""

    run = models.ForeignKey(RewardRun, on_delete=models.CASCADE, related_name="metric_rows")
    step = models.PositiveIntegerField()
    values = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="rewardmetric_unique_step")]
        ordering = ["step"]


class RewardScore(models.Model):
    """A reward model's scores of one candidate (researchers only; never shown to annotators)."""

    run = models.ForeignKey(RewardRun, on_delete=models.CASCADE, related_name="scores")
    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="reward_scores")
    scores = models.JSONField(help_text="{aspect: score}; higher is better, comparable within one reward run.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "candidate"], name="rewardscore_unique")]
