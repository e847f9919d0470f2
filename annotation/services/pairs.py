"""From judgments to preference pairs: aggregate the pairs every judgment of a group implies into PreferencePair rows."""

from __future__ import annotations

import json

from django.db import connection, transaction

from annotation.agreement import Aggregate, LabelRow, aggregate, aspect_outcomes, implied_pairs, segment_outcomes
from annotation.conf import conf
from annotation.models import CandidateGroup, CandidateLabel, Judgment, PreferencePair


def _group_judgments(*, group: CandidateGroup) -> list[tuple[int, str, list[dict]]]:
    """(judgment id, outcome, its labels as dicts: candidate, label, rank, aspects, segments) for every judgment of
    ``group``:
    one query, bounded by the group's cap.

    Each judgment's labels come as a JSON array from a correlated subquery: an index lookup per judgment whatever the
    statistics say (a join can be planned as a scan of every label when the statistics are older than the labels).
    Plain SQL: it runs on every submit, and built with the ORM it cost more Python than the database spends on it."""
    sql = (
        "SELECT j.id, j.outcome, (SELECT json_agg(json_build_object('candidate', l.candidate_id, 'label', l.label,"
        f" 'rank', l.rank, 'aspects', l.aspects, 'segments', l.segments)) FROM {CandidateLabel._meta.db_table} l WHERE l.judgment_id = j.id)"
        f" FROM {Judgment._meta.db_table} j WHERE j.group_id = %s ORDER BY j.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [group.pk])
        rows = cursor.fetchall()
    return [(jid, outcome, json.loads(labels) if isinstance(labels, str) else labels or [])
            for jid, outcome, labels in rows]


def _judgment_rows(group: CandidateGroup, judgments) -> list[tuple[int, set[tuple[int, int]], bool]]:
    mode = group.round.annotation_mode
    return [
        (jid, implied_pairs(outcome=outcome, mode=mode, labels=[LabelRow(r["candidate"], r["label"], r["rank"]) for r in labels]),
         outcome != Judgment.Outcome.SKIPPED)
        for jid, outcome, labels in judgments
    ]


def group_judgment_rows(*, group: CandidateGroup) -> list[tuple[int, set[tuple[int, int]], bool]]:
    """(judgment id, implied pairs, counts) for every judgment of ``group`` (what ``aggregate`` reads)."""
    return _judgment_rows(group, _group_judgments(group=group))


@transaction.atomic
def group_pairs_aggregate(*, group: CandidateGroup) -> Aggregate:
    """Recompute the group's human PreferencePair rows (majority direction, votes, agreement, weight) and their
    source judgments. Ties and all-bad answers produce no pair but count as annotators (lowering agreement)."""
    return group_pairs_store(group=group)


def group_pairs_store(*, group: CandidateGroup) -> Aggregate:
    """``group_pairs_aggregate`` inside the caller's transaction: four statements (read the judgments; drop the stale
    human pairs and the source links about to be rewritten; upsert the pairs; link their source judgments)."""
    judgments = _group_judgments(group=group)
    result = aggregate(judgments=_judgment_rows(group, judgments), min_majority=conf("PAIR_MIN_MAJORITY"))
    # per-aspect votes: every answered judgment's labels per candidate (each annotator rates every candidate)
    answered = [labels for _, outcome, labels in judgments if outcome != Judgment.Outcome.SKIPPED]
    aspect_votes = [{r["candidate"]: r["aspects"] for r in labels if r.get("aspects")} for labels in answered]
    segment_votes = [{r["candidate"]: r["segments"] for r in labels if r.get("segments")} for labels in answered]
    through = PreferencePair.source_judgments.through
    pair_table, link_table = PreferencePair._meta.db_table, through._meta.db_table
    # Stale: the group's human pairs the new result does not hold (their links go with them). When the result holds
    # pairs, the links of every pair of the group are rewritten below, so they all go (the subquery reads the pairs as
    # they were before this statement, stale ones included). "= ANY(ARRAY(...))": an index lookup on the links.
    doomed = f"SELECT id FROM {pair_table} WHERE group_id = %(group)s" if result.pairs else "SELECT id FROM stale"
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH stale AS (DELETE FROM {pair_table} WHERE group_id = %(group)s AND source = %(human)s"
            " AND (chosen_id, rejected_id) NOT IN (SELECT * FROM unnest(%(chosen)s::bigint[], %(rejected)s::bigint[]))"
            f" RETURNING id) DELETE FROM {link_table} WHERE preferencepair_id = ANY(ARRAY({doomed}))",
            {
                "group": group.pk,
                "human": PreferencePair.Source.HUMAN.value,
                "chosen": [p.chosen for p in result.pairs],
                "rejected": [p.rejected for p in result.pairs],
            },
        )
    if not result.pairs:
        return result
    rows = PreferencePair.objects.bulk_create(
        [
            PreferencePair(
                round_id=group.round_id, group=group, chosen_id=p.chosen, rejected_id=p.rejected, weight=p.weight,
                agreement=p.agreement, votes_for=p.votes_for, votes_against=p.votes_against,
                n_annotators=p.n_annotators, source=PreferencePair.Source.HUMAN,
                aspects=aspect_outcomes(chosen=p.chosen, rejected=p.rejected, judgments=aspect_votes),
                segments=segment_outcomes(chosen=p.chosen, rejected=p.rejected, judgments=segment_votes),
            )
            for p in result.pairs
        ],
        update_conflicts=True,
        unique_fields=["chosen", "rejected"],
        update_fields=["weight", "agreement", "votes_for", "votes_against", "n_annotators", "source", "aspects",
                       "segments", "updated_at"],
    )
    through.objects.bulk_create(
        [
            through(preferencepair_id=row.pk, judgment_id=jid)
            for row, p in zip(rows, result.pairs, strict=True)
            for jid in p.judgment_ids
        ]
    )
    return result
