"""Submitting a judgment: validate everything first, then write everything in one transaction (or nothing).

Idempotent: a second submit of the same answer returns the first judgment unchanged; a different one is refused
(409: the first answer stands). After the write the group's
pairs are re-aggregated; a disagreement adds one more annotator (adaptive k) up to the round's cap, and at the cap
opens a review item. Gold judgments feed the annotator's quality check (automatic pause)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace

from django.db import connection, transaction
from django.utils import timezone

from annotation.agreement import (
    ASPECT_NAMES,
    ASPECTS,
    MODE_BEST_WORST,
    MODE_LABELS,
    MODE_RANKING,
    label_aspects,
    label_segments,
)
from annotation.conf import conf
from annotation.errors import ApplicationError
from annotation.models import (
    Assignment,
    CandidateGroup,
    CandidateLabel,
    FlawMark,
    FlawTag,
    Judgment,
    ReviewItem,
)

ERR_ASSIGNMENT_NOT_YOURS = "This group is not assigned to you."
ERR_RESERVATION_EXPIRED = "Your reservation of this group expired; its slot went back to the queue. Load the next group."
ERR_UNKNOWN_OUTCOME = "Unknown answer {value!r}: expected one of labelled, all_good, all_bad, skipped."
ERR_UNKNOWN_LABEL = "Unknown label {value!r}: expected preferred, non_preferred or neutral."
ERR_UNKNOWN_FLAW_TAG = "Unknown flaw tag {value!r}."
# Errors name shown positions (1-based, as on the page), never a candidate id: an id would tell the annotator which
# candidate is which (ids follow creation order) and so break blind evaluation.
ERR_CANDIDATE_NOT_IN_ASSIGNMENT = "There is no video {value} in this group."
ERR_DUPLICATE_CANDIDATE = "Video {value} is labelled twice."
ERR_UNKNOWN_CANDIDATE = "A label names a video that is not in this group."
ERR_SKIP_REASON_REQUIRED = "Give a reason to skip this group."
ERR_CONTRADICTORY_LABELS = "Contradictory answer: {detail}."
ERR_NOTHING_IMPLIED = (
    "Mark at least one candidate preferred and one non-preferred, or answer 'all equally good' or 'all bad'."
)
ERR_BEST_WORST = "Pick exactly one best and one worst candidate (and they must differ)."
ERR_RANKING = "Rank every candidate once, 1 = best, with no ties or gaps."
ERR_PLAYBACK_INCOMPLETE = "Play every video once before submitting ({missing} not played to the end yet)."
ERR_BAD_NUMBER = "Invalid {name}: {value!r}."
ERR_ASPECTS_OFF = "This round does not collect per-aspect judgments: send the overall labels only."
ERR_UNKNOWN_ASPECT = "Unknown aspect {value!r}: expected vq (visual quality), mq (motion quality) or ta (text alignment)."
ERR_ASPECT_LABEL = "Unknown {aspect} label {value!r} for video {video}: expected preferred, neutral or non_preferred."
ERR_ASPECTS_SKIPPED = "A skipped group cannot carry per-aspect judgments."
ERR_SEGMENTS_OFF = "This round does not collect per-segment judgments: send the overall labels only."
ERR_SEGMENT_AFTER_END = ("Video {video}: segment {segment} would start at {start:.2f} s, where the clip has ended "
                         "({clip:.2f} s: {count} segments of {seconds:.3g} s).")
ERR_SEGMENT_LABEL = "Unknown label {value!r} for segment {segment} of video {video}: expected preferred, neutral or non_preferred."
ERR_SEGMENTS_SKIPPED = "A skipped group cannot carry per-segment judgments."
ERR_FLAW_TIME = "Invalid flaw time {value!r}: expected seconds within the clip (0 to {clip:g} s)."
ERR_ALL_MARKED = ("Contradictory answer: every video is marked {side} {where}; mark only the videos that are better or "
                  "worse than the others there (the same ones stay unmarked).")
ERR_ALREADY_SUBMITTED = ("This group was already submitted with another answer; the first answer stands (answers are "
                         "not changed once sent). Load the next group.")
ERR_DUPLICATE_FLAW = "Video {video}: the flaw {tag!r} is marked twice; mark each flaw once per video."
ERR_SKIP_REASON_LONG = "The skip reason is too long ({length} characters): at most {limit}."
ERR_TIME_SPENT = "Invalid time spent {value!r}: expected milliseconds from 0 to 86400000."
MAX_SKIP_REASON = 2000  # characters, reason and note together (the API's field says the same)
FLAW_TIME_SLACK_S = 0.1  # a player's last currentTime may pass frames / fps by a frame's rounding
MAX_TIME_SPENT_MS = 24 * 3600 * 1000


class JudgmentError(ApplicationError):
    """A refused submit; ``status`` is the HTTP status views and APIs answer with."""


class JudgmentForbidden(JudgmentError):
    status = 403


class JudgmentExpired(JudgmentError):
    status = 409


class JudgmentAlreadySubmitted(JudgmentError):
    status = 409


@dataclass(frozen=True)
class FlawInput:
    tag: str
    time_s: float | None = None


@dataclass(frozen=True)
class LabelInput:
    """One candidate's answer, naming the candidate by id or by its shown position (0-based; what the page uses)."""

    candidate_id: int | None = None
    label: str = CandidateLabel.Label.NEUTRAL
    rank: int | None = None
    playback_coverage: float = 0.0
    flaws: tuple[FlawInput, ...] = field(default_factory=tuple)
    position: int | None = None
    aspects: dict[str, str] = field(default_factory=dict)  # aspect -> label, rounds with aspect judgments only
    segments: tuple[str, ...] = ()  # one label per segment, rounds with segment judgments only


def _shown_number(pos) -> str:
    """A position as the page numbers it (1-based); anything else as given, shortened."""
    return str(pos + 1) if isinstance(pos, int) and 0 <= pos < 10**6 else repr(pos)[:20]


def _marks(rows) -> dict[int, tuple]:
    """What an answer says of each video, from (candidate id, label, rank, aspects, segments, flaw tags) rows: the
    videos it marks in any way (a neutral video with nothing else is left out, as a form leaves it out)."""
    neutral = CandidateLabel.Label.NEUTRAL
    out = {}
    for candidate_id, label, rank, aspects, segments, tags in rows:
        mark = (label, rank, tuple(sorted((a, v) for a, v in aspects.items() if v != neutral)),
                tuple((k, v) for k, v in enumerate(segments) if v != neutral), tuple(sorted(set(tags))))
        if mark != (neutral, None, (), (), ()):
            out[candidate_id] = mark
    return out


def _same_answer(*, judgment: Judgment, assignment: Assignment, outcome: str, labels: list[LabelInput],
                 skip_reason: str) -> bool:
    """Whether a repeated submit says what the stored judgment says (outcome, skip reason, each video's label, rank,
    aspects, segments and flaw tags; not the playback, timing or flaw times a retry may measure anew)."""
    if outcome != judgment.outcome or (outcome == Judgment.Outcome.SKIPPED and skip_reason.strip() != judgment.skip_reason):
        return False
    try:
        given = _resolve_positions(assignment=assignment, labels=labels)
    except JudgmentError:
        return False
    stored = judgment.labels.prefetch_related("flaws__tag")
    return _marks((lab.candidate_id, lab.label, lab.rank, label_aspects(lab.aspects), label_segments(lab.segments),
                   [f.tag.slug for f in lab.flaws.all()]) for lab in stored) == _marks(
        (lab.candidate_id, lab.label, lab.rank, dict(lab.aspects), list(lab.segments), [f.tag for f in lab.flaws])
        for lab in given)


def _resolve_positions(*, assignment: Assignment, labels: list[LabelInput]) -> list[LabelInput]:
    out = []
    for lab in labels:
        if lab.candidate_id is None:
            pos = lab.position
            if pos is None or not 0 <= pos < len(assignment.shown_order):
                raise JudgmentError(ERR_CANDIDATE_NOT_IN_ASSIGNMENT.format(value=_shown_number(pos)))
            lab = replace(lab, candidate_id=assignment.shown_order[pos])
        out.append(lab)
    return out


def _clip_seconds(round_) -> float:
    """The longest a clip of the round can be (frames / fps, with a little slack for the decoder's rounding)."""
    return round(round_.clip_seconds + FLAW_TIME_SLACK_S, 3)


def _validate_aspects(*, assignment: Assignment, outcome: str, lab: LabelInput) -> None:
    if not lab.aspects:
        return
    if not assignment.group.round.aspect_judgments:
        raise JudgmentError(ERR_ASPECTS_OFF)
    video = assignment.shown_order.index(lab.candidate_id) + 1
    for aspect, value in lab.aspects.items():
        if aspect not in ASPECTS:
            raise JudgmentError(ERR_UNKNOWN_ASPECT.format(value=str(aspect)[:20]))
        if value not in CandidateLabel.Label.values:
            raise JudgmentError(ERR_ASPECT_LABEL.format(aspect=ASPECT_NAMES[aspect], value=str(value)[:20], video=video))
        if outcome == Judgment.Outcome.SKIPPED and value != CandidateLabel.Label.NEUTRAL:
            raise JudgmentError(ERR_ASPECTS_SKIPPED)


def _validate_segments(*, assignment: Assignment, outcome: str, lab: LabelInput) -> None:
    if not lab.segments:
        return
    round_ = assignment.group.round
    if not round_.segment_judgments:
        raise JudgmentError(ERR_SEGMENTS_OFF)
    video = assignment.shown_order.index(lab.candidate_id) + 1
    count = round_.segment_count
    if len(lab.segments) > count:
        raise JudgmentError(ERR_SEGMENT_AFTER_END.format(
            video=video, segment=count + 1, start=count * round_.segment_length, count=count,
            clip=round_.clip_seconds, seconds=round_.segment_length))
    for k, value in enumerate(lab.segments, start=1):
        if value not in CandidateLabel.Label.values:
            raise JudgmentError(ERR_SEGMENT_LABEL.format(value=str(value)[:20], segment=k, video=video))
        if outcome == Judgment.Outcome.SKIPPED and value != CandidateLabel.Label.NEUTRAL:
            raise JudgmentError(ERR_SEGMENTS_SKIPPED)


def _refuse_all_marked(*, assignment: Assignment, labels: list[LabelInput]) -> None:
    """Per aspect and per segment a mark says "better (worse) than the others here": every video of the group marked
    the same way there says nothing and contradicts itself (as "all preferred" does overall)."""
    shown = len(assignment.shown_order)
    if shown < 2 or len(labels) < shown:
        return
    places = [(f"for {ASPECT_NAMES[a]}", lambda lab, a=a: lab.aspects.get(a)) for a in ASPECTS]
    segments = max((len(lab.segments) for lab in labels), default=0)
    places += [(f"in segment {k + 1}", lambda lab, k=k: lab.segments[k] if k < len(lab.segments) else None)
               for k in range(segments)]
    for where, value in places:
        marks = {value(lab) for lab in labels}
        for mark, side in ((CandidateLabel.Label.PREFERRED, "better"), (CandidateLabel.Label.NON_PREFERRED, "worse")):
            if marks == {mark}:
                raise JudgmentError(ERR_ALL_MARKED.format(side=side, where=where))


def _validate(*, assignment: Assignment, outcome: str, labels: list[LabelInput], skip_reason: str) -> dict[str, FlawTag]:
    if outcome not in Judgment.Outcome.values:
        raise JudgmentError(ERR_UNKNOWN_OUTCOME.format(value=str(outcome)[:32]))
    if len(skip_reason) > MAX_SKIP_REASON:
        raise JudgmentError(ERR_SKIP_REASON_LONG.format(length=len(skip_reason), limit=MAX_SKIP_REASON))
    shown = set(assignment.shown_order)
    clip_s = _clip_seconds(assignment.group.round)
    seen: set[int] = set()
    slugs: set[str] = set()
    for lab in labels:
        if lab.candidate_id not in shown:
            raise JudgmentError(ERR_UNKNOWN_CANDIDATE)
        if lab.candidate_id in seen:
            raise JudgmentError(ERR_DUPLICATE_CANDIDATE.format(value=assignment.shown_order.index(lab.candidate_id) + 1))
        seen.add(lab.candidate_id)
        if lab.label not in CandidateLabel.Label.values:
            raise JudgmentError(ERR_UNKNOWN_LABEL.format(value=lab.label))
        _validate_aspects(assignment=assignment, outcome=outcome, lab=lab)
        _validate_segments(assignment=assignment, outcome=outcome, lab=lab)
        if not (math.isfinite(lab.playback_coverage) and 0.0 <= lab.playback_coverage <= 1.0):
            raise JudgmentError(ERR_BAD_NUMBER.format(name="playback coverage", value=lab.playback_coverage))
        video_tags: set[str] = set()
        for flaw in lab.flaws:
            if flaw.time_s is not None and not (math.isfinite(flaw.time_s) and 0 <= flaw.time_s <= clip_s):
                raise JudgmentError(ERR_FLAW_TIME.format(value=flaw.time_s, clip=assignment.group.round.clip_seconds))
            if flaw.tag in video_tags:
                raise JudgmentError(ERR_DUPLICATE_FLAW.format(
                    video=assignment.shown_order.index(lab.candidate_id) + 1, tag=str(flaw.tag)[:64]))
            video_tags.add(flaw.tag)
        slugs |= video_tags
    _refuse_all_marked(assignment=assignment, labels=labels)
    tags = {t.slug: t for t in FlawTag.objects.filter(slug__in=slugs, is_active=True)} if slugs else {}
    for slug in sorted(slugs - set(tags)):
        raise JudgmentError(ERR_UNKNOWN_FLAW_TAG.format(value=slug))

    by_label = {value: [lab for lab in labels if lab.label == value] for value in CandidateLabel.Label.values}
    ranked = [lab for lab in labels if lab.rank is not None]
    marked = by_label["preferred"] + by_label["non_preferred"]
    if outcome == Judgment.Outcome.SKIPPED:
        if not skip_reason.strip():
            raise JudgmentError(ERR_SKIP_REASON_REQUIRED)
        if marked or ranked:
            raise JudgmentError(ERR_CONTRADICTORY_LABELS.format(detail="a skipped group cannot carry preferences"))
    elif outcome in (Judgment.Outcome.ALL_GOOD, Judgment.Outcome.ALL_BAD):
        if marked or ranked:
            raise JudgmentError(
                ERR_CONTRADICTORY_LABELS.format(detail=f"'{outcome}' cannot also mark candidates better or worse")
            )
    else:
        mode = assignment.group.round.annotation_mode
        if mode == MODE_LABELS:
            if ranked:
                raise JudgmentError(ERR_CONTRADICTORY_LABELS.format(detail="ranks are not used in this round"))
            if not by_label["preferred"] or not by_label["non_preferred"]:
                raise JudgmentError(ERR_NOTHING_IMPLIED)
        elif mode == MODE_BEST_WORST:
            if ranked or len(by_label["preferred"]) != 1 or len(by_label["non_preferred"]) != 1:
                raise JudgmentError(ERR_BEST_WORST)
        elif mode == MODE_RANKING:
            if marked:
                raise JudgmentError(ERR_CONTRADICTORY_LABELS.format(detail="use ranks, not labels, in this round"))
            if sorted(lab.rank for lab in ranked) != list(range(1, len(shown) + 1)):
                raise JudgmentError(ERR_RANKING)
    if outcome != Judgment.Outcome.SKIPPED and assignment.group.round.require_full_playback:
        coverage = {lab.candidate_id: lab.playback_coverage for lab in labels}
        minimum = conf("FULL_PLAYBACK_MIN_COVERAGE")
        missing = [pos + 1 for pos, cid in enumerate(assignment.shown_order) if coverage.get(cid, 0.0) < minimum]
        if missing:
            names = ", ".join(f"video {n}" for n in missing)
            raise JudgmentError(ERR_PLAYBACK_INCOMPLETE.format(missing=names))
    return tags


def _store(*, assignment, outcome, labels, skip_reason, time_spent_ms, tags, now) -> Judgment:
    judgment = Judgment(
        assignment=assignment,
        group_id=assignment.group_id,
        annotator_id=assignment.annotator_id,
        outcome=outcome,
        skip_reason=skip_reason.strip() if outcome == Judgment.Outcome.SKIPPED else "",
        time_spent_ms=time_spent_ms,
    )
    judgment.save()
    given = {lab.candidate_id: lab for lab in labels}
    # an aspect round stores all three aspects of every candidate (unmarked = neutral: the same as the others)
    with_aspects = assignment.group.round.aspect_judgments and outcome != Judgment.Outcome.SKIPPED
    n_segments = assignment.group.round.segment_count if outcome != Judgment.Outcome.SKIPPED else 0
    rows, flaws_per_row = [], []
    for position, cid in enumerate(assignment.shown_order):
        lab = given.get(cid) or LabelInput(candidate_id=cid)
        aspects = {a: lab.aspects.get(a, CandidateLabel.Label.NEUTRAL) for a in ASPECTS} if with_aspects else {}
        segments = [*lab.segments, *[CandidateLabel.Label.NEUTRAL] * (n_segments - len(lab.segments))][:n_segments]
        rows.append(
            CandidateLabel(
                judgment=judgment, candidate_id=cid, label=lab.label, rank=lab.rank, shown_position=position,
                playback_coverage=lab.playback_coverage, aspects=aspects, segments=segments,
            )
        )
        flaws_per_row.append(lab.flaws)
    rows = CandidateLabel.objects.bulk_create(rows)
    marks = [
        FlawMark(label=row, tag=tags[f.tag], time_s=f.time_s) for row, flaws in zip(rows, flaws_per_row, strict=True) for f in flaws
    ]
    if marks:
        FlawMark.objects.bulk_create(marks)
    Assignment.objects.filter(pk=assignment.pk).update(status=Assignment.Status.SUBMITTED, submitted_at=now)
    assignment.status, assignment.submitted_at = Assignment.Status.SUBMITTED, now
    return judgment


def _group_count_judgment(*, group: CandidateGroup) -> None:
    """Count the new judgment on the group and give back its reservation slot, locking the group row until the end of
    the transaction; ``group`` gets the row's current counters and status (one statement: UPDATE ... RETURNING)."""
    table = CandidateGroup._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET judgments_count = judgments_count + 1, "
            "active_reservations = GREATEST(active_reservations - 1, 0) WHERE id = %s "
            "RETURNING status, is_gold, target_judgments, active_reservations, judgments_count",
            [group.pk],
        )
        (group.status, group.is_gold, group.target_judgments, group.active_reservations,
         group.judgments_count) = cursor.fetchone()


def _group_advance(*, group: CandidateGroup) -> None:
    """After a judgment: re-aggregate pairs; on enough judgments close the group, add an annotator, or open a review."""
    from annotation.services.pairs import group_pairs_store

    if group.is_gold:
        return  # gold groups stay served (every annotator sees each once) and are scored, not aggregated
    result = group_pairs_store(group=group)
    if group.judgments_count < group.target_judgments:
        return
    if not result.disagreement:
        group.status = CandidateGroup.Status.DONE
    elif group.target_judgments < group.round.max_annotators_per_group:
        group.target_judgments += 1  # adaptive: one more annotator
    else:
        group.status = CandidateGroup.Status.REVIEW
        conflicts = ", ".join(f"{a}~{b}" for a, b in result.conflicts)
        ReviewItem.objects.update_or_create(
            group=group,
            defaults={"status": ReviewItem.Status.OPEN, "reason": f"Annotators disagree on candidate pairs {conflicts}."},
        )
    CandidateGroup.objects.filter(pk=group.pk).update(status=group.status, target_judgments=group.target_judgments)


def _uuid_or_none(value) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return None


@transaction.atomic
def judgment_submit(
    *,
    annotator,
    assignment_id: int | None = None,
    public_id: str | None = None,
    outcome: str,
    labels: list[LabelInput],
    skip_reason: str = "",
    time_spent_ms: int = 0,
    now=None,
) -> tuple[Judgment, bool]:
    """Store one annotator's answer for one reserved group, named by its id (internal callers) or by its public
    handle (what annotator pages and the API send). Returns (judgment, created): a repeated submit of the
    same answer returns the first judgment with created=False (another answer: ``JudgmentAlreadySubmitted``, 409). Raises ``JudgmentError`` (4xx) and stores nothing."""
    now = now or timezone.now()
    lookup = {"pk": assignment_id} if public_id is None else {"public_id": _uuid_or_none(public_id)}
    assignment = (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("group__round")
        .filter(**lookup)
        .first()
        if None not in lookup.values() else None
    )
    if assignment is None or assignment.annotator_id != annotator.pk:
        raise JudgmentForbidden(ERR_ASSIGNMENT_NOT_YOURS)
    if assignment.status == Assignment.Status.SUBMITTED:  # a retry answers as the first submit did; a change is refused
        judgment = Judgment.objects.get(assignment=assignment)
        if not _same_answer(judgment=judgment, assignment=assignment, outcome=outcome, labels=labels,
                            skip_reason=skip_reason):
            raise JudgmentAlreadySubmitted(ERR_ALREADY_SUBMITTED)
        return judgment, False
    if assignment.status == Assignment.Status.EXPIRED or assignment.expires_at <= now:
        raise JudgmentExpired(ERR_RESERVATION_EXPIRED)
    if isinstance(time_spent_ms, bool) or not isinstance(time_spent_ms, int) or not 0 <= time_spent_ms <= MAX_TIME_SPENT_MS:
        raise JudgmentError(ERR_TIME_SPENT.format(value=time_spent_ms))
    labels = _resolve_positions(assignment=assignment, labels=labels)
    tags = _validate(assignment=assignment, outcome=outcome, labels=labels, skip_reason=skip_reason)
    judgment = _store(
        assignment=assignment, outcome=outcome, labels=labels, skip_reason=skip_reason, time_spent_ms=time_spent_ms,
        tags=tags, now=now,
    )
    group = assignment.group  # read with the assignment (and its round); counters and status come with the lock here
    _group_count_judgment(group=group)
    _group_advance(group=group)
    if group.is_gold:
        from annotation.services.quality import annotator_quality_check

        annotator_quality_check(annotator=annotator)
    return judgment, True
