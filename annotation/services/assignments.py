"""Reservations of candidate groups for annotators.

Each group is judged by ``Round.annotators_per_group`` distinct annotators (``CandidateGroup.target_judgments``,
raised by one on disagreement up to ``Round.max_annotators_per_group`` by the judgments service). A reservation
holds one slot (``active_reservations``) until it is submitted or its time-to-live passes. The queue query locks the
candidate group row with ``SELECT ... FOR UPDATE OF group SKIP LOCKED`` so concurrent annotators never wait on, nor
double-book, the same slot; the unique constraint (group, annotator) makes "never twice to the same annotator" hold
even against a bug here. Every function runs a number of queries that does not depend on the size of the database.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta

from django.db import connection, models, transaction
from django.db.models import F
from django.utils import timezone

from annotation.conf import conf
from annotation.errors import ApplicationError
from annotation.models import Assignment, Candidate, CandidateGroup, Prompt, PromptSet, Round
from annotation.services.accounts import annotator_profile_ensure

ERR_ANNOTATOR_PAUSED = "Your annotation access is paused{reason}. A reviewer will contact you; until then no groups are served."

# Rounds whose ready groups are served (a round still generating already has complete groups to judge).
SERVABLE_ROUND_STATUSES = (Round.Status.GENERATING, Round.Status.ANNOTATING)
MAX_SKIPPED_GROUPS = 8
_rng = random.SystemRandom()


class AnnotatorPausedError(ApplicationError):
    """The annotator is paused (403): no groups are served."""

    status = 403

    def __init__(self, reason: str = ""):
        self.reason = reason
        super().__init__(ERR_ANNOTATOR_PAUSED.format(reason=f" ({reason})" if reason else ""))


def candidates_servable(*, group: CandidateGroup, candidates: list[Candidate]) -> list[Candidate]:
    """The candidates an annotator may see: READY, and unflagged when the round excludes flagged ones."""
    servable = [c for c in candidates if c.status == Candidate.Status.READY and c.video_uri]
    if group.round.exclude_flagged:
        servable = [c for c in servable if not c.screening_flags]
    return servable


# -- the two reads of every "next" call --------------------------------------------------------------------------------
# Written in SQL: built with the ORM (select_related over four tables, a subquery, the candidate rows) each cost about
# 2 ms of Python to compile, for 0.15 ms of work in the database. They load the fields that the queue, the judgments
# service and the annotator page use; the other fields are deferred (read on first access, as with ``only()``).
_LOADED: dict[type[models.Model], tuple[str, ...]] = {
    Assignment: (
        "id", "group_id", "annotator_id", "status", "public_id", "shown_order", "reserved_at", "expires_at", "submitted_at",
    ),
    CandidateGroup: (
        "id", "round_id", "prompt_id", "status", "prompt_text", "is_gold", "target_judgments", "active_reservations",
        "judgments_count",
    ),
    Round: (
        "id", "status", "fps", "annotators_per_group", "max_annotators_per_group", "gold_rate", "annotation_mode",
        "require_full_playback", "aspect_judgments", "segment_judgments", "segment_seconds", "num_frames",
        "exclude_flagged",
    ),
    Prompt: ("id", "text", "prompt_set_id"),
    PromptSet: ("id", "guidelines_md"),
}
# The candidate fields the queue and the annotator page need, read with the group (a JSON array, ordered by id).
_CANDIDATE_FIELDS = ("id", "status", "video_uri", "poster_uri", "fps", "duration_s", "screening_flags")
_CANDIDATE_FLOATS = ("fps", "duration_s")


def _fields(model) -> list:
    return [f for f in model._meta.concrete_fields if f.attname in _LOADED[model]]  # in the order from_db expects


def _select(model, alias: str) -> str:
    return ", ".join(f'{alias}."{f.column}"' for f in _fields(model))


def _group_candidates_sql(group_id_sql: str) -> str:
    pairs = ", ".join(f"'{name}', c.\"{Candidate._meta.get_field(name).column}\"" for name in _CANDIDATE_FIELDS)
    return (
        f"(SELECT json_agg(json_build_object({pairs}) ORDER BY c.id) FROM {Candidate._meta.db_table} c"
        f" WHERE c.group_id = {group_id_sql})"
    )


_GROUP_JOINS = (
    f"JOIN {Round._meta.db_table} r ON r.id = g.round_id JOIN {Prompt._meta.db_table} p ON p.id = g.prompt_id"
    f" LEFT JOIN {PromptSet._meta.db_table} ps ON ps.id = p.prompt_set_id"
)
_GROUP_COLUMNS = ", ".join(
    [_select(CandidateGroup, "g"), _select(Round, "r"), _select(Prompt, "p"), _select(PromptSet, "ps")]
)


def _from_row(row, position: int, model):
    names = [f.attname for f in _fields(model)]
    values = row[position : position + len(names)]
    obj = None if values[0] is None else model.from_db(connection.alias, names, values)
    return obj, position + len(names)


def _group_from_row(row, position: int) -> tuple[CandidateGroup, int]:
    """A group with its round, prompt and prompt set (the shape of ``select_related("round", "prompt__prompt_set")``),
    and ``candidate_rows`` from the column after them."""
    group, position = _from_row(row, position, CandidateGroup)
    group.round, position = _from_row(row, position, Round)
    group.prompt, position = _from_row(row, position, Prompt)
    group.prompt.prompt_set, position = _from_row(row, position, PromptSet)
    rows = row[position]
    group.candidate_rows = json.loads(rows) if isinstance(rows, str) else rows
    return group, position + 1


def _candidates_from_rows(rows) -> list[Candidate]:
    """Candidates as loaded from the database (``from_db``: not "adding", other fields deferred)."""
    out = []
    for row in rows or ():
        for name in _CANDIDATE_FLOATS:  # JSON carries 25.0 as 25
            if row.get(name) is not None:
                row[name] = float(row[name])
        names = [f.attname for f in Candidate._meta.concrete_fields if f.attname in row]  # the order from_db expects
        out.append(Candidate.from_db(connection.alias, names, [row[n] for n in names]))
    return out


def _queue_first(*, annotator, gold: bool, round_id: int | None, skipped: list[int]) -> CandidateGroup | None:
    """The first queued group for ``annotator``, locked (``FOR UPDATE OF g SKIP LOCKED``); None when none is left.

    "NOT IN (the annotator's groups)", not "NOT EXISTS": PostgreSQL hashes the annotator's groups once (a hashed
    subplan, linear in their history). NOT EXISTS becomes an anti-join whose plan hangs on the row estimate for this
    annotator; with statistics older than their work (a new annotator) it rescans their assignments for every queued
    group, quadratic in their history (30 ms after 700 groups)."""
    where = [
        "g.status = %s", "g.is_gold = %s", "r.status = ANY(%s)",
        f"NOT (g.id IN (SELECT a.group_id FROM {Assignment._meta.db_table} a WHERE a.annotator_id = %s))",
    ]
    params: list = [CandidateGroup.Status.READY.value, gold, [s.value for s in SERVABLE_ROUND_STATUSES], annotator.pk]
    if not gold:  # gold groups are shown to every annotator once; regular groups until their k slots are taken
        where.append("g.judgments_count + g.active_reservations < g.target_judgments")
    if round_id is not None:
        where.append("g.round_id = %s")
        params.append(round_id)
    if skipped:
        where.append("NOT (g.id = ANY(%s))")
        params.append(skipped)
    sql = (
        f"SELECT {_GROUP_COLUMNS}, {_group_candidates_sql('g.id')} FROM {CandidateGroup._meta.db_table} g {_GROUP_JOINS}"
        f" WHERE {' AND '.join(where)}"
        " ORDER BY g.status, g.round_id, g.id LIMIT 1 FOR UPDATE OF g SKIP LOCKED"  # the group_queue index
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else _group_from_row(row, 0)[0]


def _live_reservations(*, annotator, now, limit: int) -> list[Assignment]:
    """The annotator's unexpired reservations, oldest first, with group, round, prompt, prompt set and candidates."""
    sql = (
        f"SELECT {_select(Assignment, 'a')}, {_GROUP_COLUMNS}, {_group_candidates_sql('a.group_id')}"
        f" FROM {Assignment._meta.db_table} a JOIN {CandidateGroup._meta.db_table} g ON g.id = a.group_id {_GROUP_JOINS}"
        " WHERE a.annotator_id = %s AND a.status = %s AND a.expires_at > %s ORDER BY a.reserved_at, a.id LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [annotator.pk, Assignment.Status.RESERVED.value, now, limit])
        rows = cursor.fetchall()
    live = []
    for row in rows:
        assignment, position = _from_row(row, 0, Assignment)
        assignment.group, _ = _group_from_row(row, position)
        assignment.shown_candidates = {c.id: c for c in _candidates_from_rows(assignment.group.candidate_rows)}
        live.append(assignment)
    return live


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
        group = _queue_first(annotator=annotator, gold=gold, round_id=round_id, skipped=skipped)
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


# pg_advisory_xact_lock(namespace, key): the namespace keeps these locks apart from any other advisory lock.
_ANNOTATOR_LOCK_NAMESPACE = 0x56445051  # "VDPQ"


def _annotator_lock(*, annotator) -> None:
    """Serialise one annotator's "next" calls until the end of the transaction (a PostgreSQL advisory lock), so
    concurrent calls never hold more than 1 + lookahead live reservations between them: each one counts the
    reservations after the previous one committed its own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_ANNOTATOR_LOCK_NAMESPACE, annotator.pk % 2_147_483_647])


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
    _annotator_lock(annotator=annotator)
    live = _live_reservations(annotator=annotator, now=now, limit=1 + lookahead)
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
