"""Reservations of candidate groups for annotators.

Each group is judged by ``Round.annotators_per_group`` distinct annotators (``CandidateGroup.target_judgments``,
raised by one on disagreement up to ``Round.max_annotators_per_group`` by the judgments service). A reservation
holds one slot (``active_reservations``) until it is submitted or its time-to-live passes. The queue query locks the
candidate group row with ``SELECT ... FOR UPDATE OF group SKIP LOCKED`` so concurrent annotators never wait on, nor
double-book, the same slot; the unique constraint (group, annotator) makes "never twice to the same annotator" hold
even against a bug here. Every function runs a number of queries that does not depend on the size of the database.
"""

from __future__ import annotations

import random
from datetime import timedelta

from django.contrib.postgres.expressions import ArraySubquery
from django.db import transaction
from django.db.models import F, OuterRef
from django.db.models.functions import JSONObject
from django.utils import timezone

from annotation.conf import conf
from annotation.models import Assignment, Candidate, CandidateGroup, Round
from annotation.services.accounts import annotator_profile_ensure

ERR_ANNOTATOR_PAUSED = "Your annotation access is paused{reason}. A reviewer will contact you; until then no groups are served."

# Rounds whose ready groups are served (a round still generating already has complete groups to judge).
SERVABLE_ROUND_STATUSES = (Round.Status.GENERATING, Round.Status.ANNOTATING)
MAX_SKIPPED_GROUPS = 8
_rng = random.SystemRandom()


class AnnotatorPausedError(Exception):
    def __init__(self, reason: str = ""):
        self.reason = reason
        super().__init__(ERR_ANNOTATOR_PAUSED.format(reason=f" ({reason})" if reason else ""))


def candidates_servable(*, group: CandidateGroup, candidates: list[Candidate]) -> list[Candidate]:
    """The candidates an annotator may see: READY, and unflagged when the round excludes flagged ones."""
    servable = [c for c in candidates if c.status == Candidate.Status.READY and c.video_uri]
    if group.round.exclude_flagged:
        servable = [c for c in servable if not c.screening_flags]
    return servable


# The candidate fields the queue and the annotator page need, read with the group in the same query.
_CANDIDATE_FIELDS = ("id", "status", "video_uri", "poster_uri", "fps", "duration_s", "screening_flags")
_CANDIDATE_FLOATS = ("fps", "duration_s")


_group_candidates_cache: dict[str, ArraySubquery] = {}


def _group_candidates(outer_field: str) -> ArraySubquery:
    """The candidates of the group whose id is the outer query's ``outer_field``, as a JSON array (for
    ``_candidates_from_rows``). Built once per field: expressions are copied, never changed, when a query uses them."""
    expression = _group_candidates_cache.get(outer_field)
    if expression is None:
        rows = Candidate.objects.filter(group=OuterRef(outer_field)).order_by("id")
        expression = ArraySubquery(rows.values(row=JSONObject(**{f: f for f in _CANDIDATE_FIELDS})))
        _group_candidates_cache[outer_field] = expression
    return expression


def _candidates_from_rows(rows) -> list[Candidate]:
    out = []
    for row in rows or ():
        for name in _CANDIDATE_FLOATS:  # JSON carries 25.0 as 25
            if row.get(name) is not None:
                row[name] = float(row[name])
        out.append(Candidate(**row))
    return out


def _queue(*, annotator, gold: bool):
    # "NOT IN (the annotator's groups)", not "NOT EXISTS": PostgreSQL hashes the annotator's groups once (a hashed
    # subplan, linear in their history). NOT EXISTS becomes an anti-join whose plan hangs on the row estimate for
    # this annotator; with statistics older than their work (a new annotator) it rescans their assignments for every
    # queued group, quadratic in their history (30 ms after 700 groups).
    already = Assignment.objects.filter(annotator=annotator).values("group_id")
    qs = (
        CandidateGroup.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("round", "prompt__prompt_set")
        .annotate(candidate_rows=_group_candidates("pk"))
        .filter(status=CandidateGroup.Status.READY, is_gold=gold, round__status__in=SERVABLE_ROUND_STATUSES)
        .exclude(id__in=already)
    )
    if not gold:  # gold groups are shown to every annotator once; regular groups until their k slots are taken
        qs = qs.alias(load=F("judgments_count") + F("active_reservations")).filter(load__lt=F("target_judgments"))
    return qs.order_by("status", "round_id", "id")  # the group_queue index (status, round, id)


def _reserve(*, annotator, group: CandidateGroup, candidates: list[Candidate], now) -> Assignment:
    order = [c.id for c in candidates]
    _rng.shuffle(order)
    assignment = Assignment(
        group=group,
        annotator=annotator,
        shown_order=order,
        expires_at=now + timedelta(seconds=conf("RESERVATION_TTL_S")),
    )
    assignment.save()
    CandidateGroup.objects.filter(pk=group.pk).update(active_reservations=F("active_reservations") + 1)
    group.active_reservations += 1
    assignment.shown_candidates = {c.id: c for c in candidates}  # what the page needs, with no further query
    return assignment


def _lock_next(*, annotator, gold: bool, round_id: int | None = None) -> tuple[CandidateGroup, list[Candidate]] | None:
    skipped: list[int] = []
    for _ in range(MAX_SKIPPED_GROUPS):
        qs = _queue(annotator=annotator, gold=gold)
        if round_id is not None:
            qs = qs.filter(round_id=round_id)
        if skipped:
            qs = qs.exclude(id__in=skipped)
        group = qs.first()
        if group is None:
            return None
        servable = candidates_servable(group=group, candidates=_candidates_from_rows(group.candidate_rows))
        if len(servable) >= 2:
            return group, servable
        skipped.append(group.id)
    return None


@transaction.atomic
def assignment_reserve_next(*, annotator, now=None) -> Assignment | None:
    """Reserve one more group for ``annotator`` (a gold group at the round's gold rate); None when nothing is left."""
    return _reserve_next(annotator=annotator, now=now or timezone.now())


def _reserve_next(*, annotator, now) -> Assignment | None:
    """``assignment_reserve_next`` inside the caller's transaction (no savepoint: nothing here is caught and retried)."""
    found = _lock_next(annotator=annotator, gold=False)
    if found is None:
        return None
    group, candidates = found
    if group.round.gold_rate > 0 and _rng.random() < group.round.gold_rate:
        gold = _lock_next(annotator=annotator, gold=True, round_id=group.round_id)
        if gold is not None:
            group, candidates = gold
    return _reserve(annotator=annotator, group=group, candidates=candidates, now=now)


@transaction.atomic
def assignments_for_annotator(*, annotator, lookahead: int | None = None, now=None) -> list[Assignment]:
    """The annotator's live reservations, oldest (the one to show) first, topped up to 1 + ``lookahead``.

    The first is the current group (its time-to-live is renewed: the annotator is looking at it); the others are
    held so that their media can be prefetched. Raises ``AnnotatorPausedError`` for a paused annotator."""
    now = now or timezone.now()
    lookahead = conf("RESERVATION_LOOKAHEAD") if lookahead is None else lookahead
    profile = annotator_profile_ensure(user=annotator)
    if profile.is_paused:
        raise AnnotatorPausedError(profile.paused_reason)
    live = list(
        Assignment.objects.select_related("group__round", "group__prompt__prompt_set")
        .annotate(candidate_rows=_group_candidates("group_id"))
        .filter(annotator=annotator, status=Assignment.Status.RESERVED, expires_at__gt=now)
        .order_by("reserved_at", "id")[: 1 + lookahead]
    )
    for assignment in live:
        assignment.shown_candidates = {c.id: c for c in _candidates_from_rows(assignment.candidate_rows)}
    while len(live) < 1 + lookahead:
        assignment = _reserve_next(annotator=annotator, now=now)
        if assignment is None:
            break
        live.append(assignment)
    if live:
        current = live[0]
        current.expires_at = now + timedelta(seconds=conf("RESERVATION_TTL_S"))
        Assignment.objects.filter(pk=current.pk).update(expires_at=current.expires_at)
    return live


@transaction.atomic
def assignments_expire(*, now=None) -> int:
    """Mark reservations past their time-to-live expired and give their slot back to the group. Returns the count."""
    now = now or timezone.now()
    expired = list(
        Assignment.objects.select_for_update(skip_locked=True)
        .filter(status=Assignment.Status.RESERVED, expires_at__lt=now)
        .order_by("group_id")
        .values_list("id", "group_id")[:10_000]
    )
    if not expired:
        return 0
    Assignment.objects.filter(id__in=[a for a, _ in expired]).update(status=Assignment.Status.EXPIRED)
    per_group: dict[int, int] = {}
    for _, group_id in expired:
        per_group[group_id] = per_group.get(group_id, 0) + 1
    for group_id, count in per_group.items():
        CandidateGroup.objects.filter(id=group_id, active_reservations__gte=count).update(
            active_reservations=F("active_reservations") - count
        )
        CandidateGroup.objects.filter(id=group_id, active_reservations__lt=count).update(active_reservations=0)
    return len(expired)
