"""From judgments to preference pairs: aggregate the pairs every judgment of a group implies into PreferencePair rows."""

from __future__ import annotations

from django.db import transaction

from annotation.agreement import Aggregate, LabelRow, aggregate, implied_pairs
from annotation.conf import conf
from annotation.models import CandidateGroup, CandidateLabel, Judgment, PreferencePair


def group_judgment_rows(*, group: CandidateGroup) -> list[tuple[int, set[tuple[int, int]], bool]]:
    """(judgment id, implied pairs, counts) for every judgment of ``group``: two queries, bounded by the group's cap."""
    judgments = list(Judgment.objects.filter(group=group).values_list("id", "outcome").order_by("id"))
    labels: dict[int, list[LabelRow]] = {jid: [] for jid, _ in judgments}
    for jid, cand, label, rank in CandidateLabel.objects.filter(judgment__group=group).values_list(
        "judgment_id", "candidate_id", "label", "rank"
    ):
        labels[jid].append(LabelRow(cand, label, rank))
    mode = group.round.annotation_mode
    return [
        (jid, implied_pairs(outcome=outcome, mode=mode, labels=labels[jid]), outcome != Judgment.Outcome.SKIPPED)
        for jid, outcome in judgments
    ]


@transaction.atomic
def group_pairs_aggregate(*, group: CandidateGroup) -> Aggregate:
    """Recompute the group's human PreferencePair rows (majority direction, votes, agreement, weight) and their
    source judgments. Ties and all-bad answers produce no pair but count as annotators (lowering agreement)."""
    result = aggregate(judgments=group_judgment_rows(group=group), min_majority=conf("PAIR_MIN_MAJORITY"))
    human = PreferencePair.objects.filter(group=group, source=PreferencePair.Source.HUMAN)
    keep = {(p.chosen, p.rejected) for p in result.pairs}
    stale = [pk for pk, c, r in human.values_list("id", "chosen_id", "rejected_id") if (c, r) not in keep]
    if stale:
        PreferencePair.objects.filter(id__in=stale).delete()
    if not result.pairs:
        return result
    rows = PreferencePair.objects.bulk_create(
        [
            PreferencePair(
                round_id=group.round_id, group=group, chosen_id=p.chosen, rejected_id=p.rejected, weight=p.weight,
                agreement=p.agreement, votes_for=p.votes_for, votes_against=p.votes_against,
                n_annotators=p.n_annotators, source=PreferencePair.Source.HUMAN,
            )
            for p in result.pairs
        ],
        update_conflicts=True,
        unique_fields=["chosen", "rejected"],
        update_fields=["weight", "agreement", "votes_for", "votes_against", "n_annotators", "source", "updated_at"],
    )
    through = PreferencePair.source_judgments.through
    through.objects.filter(preferencepair__group=group).delete()
    through.objects.bulk_create(
        [
            through(preferencepair_id=row.pk, judgment_id=jid)
            for row, p in zip(rows, result.pairs, strict=True)
            for jid in p.judgment_ids
        ]
    )
    return result
