"""Which groups of a round people label, within a label budget (issue: labels that teach more).

``round_select_for_labels`` keeps ``budget`` of the round's unjudged ready groups for annotators and takes the rest
out of the queue: chosen at random, or **actively** by a finished reward model's uncertainty (the groups whose two
best candidates it scores closest, i.e. where a human label is most informative). The rest are either **held**
(status ``held``: not served; ``round_release_held`` sends them to annotators later) or **pseudo-labelled** by the
reward model: one pair per group, its best over its worst candidate, stored with ``source = model`` and never mixed
silently with human pairs (DPO runs leave them out unless asked, exports can filter by source). The choice is
recorded in ``Round.config["selection"]`` and the round's status history."""

from __future__ import annotations

import random

from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.models import Candidate, CandidateGroup, PreferencePair, RewardRun, RewardScore, Round, RoundEvent

STRATEGIES = ("random", "active")
RESTS = ("hold", "pseudo")
ERR_BUDGET = "The label budget must be a whole number of groups from 1 to {n} (the round's unjudged ready groups)."
ERR_STRATEGY = "Selection must be 'random' or 'active' (by the reward model's uncertainty)."
ERR_REST = "The groups outside the budget are either held back ('hold') or pseudo-labelled by the reward model ('pseudo')."
ERR_NEEDS_RUN = "{what} needs a finished reward model that scored this round's candidates."
ERR_UNSCORED = "Reward model {name!r} has not scored {missing} of these groups' candidates: score the round first."
ERR_NO_GROUPS = "Round {name!r} has no ready group that nobody judged yet: nothing to select."


def _candidates_of(groups: list[CandidateGroup]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {g.id: [] for g in groups}
    for gid, cid in Candidate.objects.filter(group__in=groups, status=Candidate.Status.READY).values_list("group_id", "id"):
        out[gid].append(cid)
    return out


def group_scores(*, groups: list[CandidateGroup], run: RewardRun) -> dict[int, dict[int, float]]:
    """Per group, its ready candidates' overall scores by ``run`` (two queries); refuses unscored candidates."""
    members = _candidates_of(groups)
    scores = dict(RewardScore.objects.filter(run=run, candidate_id__in=[c for cs in members.values() for c in cs])
                  .values_list("candidate_id", "scores"))
    missing = sum(1 for cs in members.values() for c in cs if "overall" not in scores.get(c, {}))
    if missing:
        raise ValidationError(ERR_UNSCORED.format(name=run.name, missing=missing))
    return {gid: {c: scores[c]["overall"] for c in cs} for gid, cs in members.items()}


def _margin(scores: dict[int, float]) -> float:
    """The overall-score margin between a group's two best candidates (small = the model is unsure)."""
    top = sorted(scores.values(), reverse=True)
    return top[0] - top[1] if len(top) > 1 else float("inf")


@transaction.atomic
def round_select_for_labels(*, round_id: int, budget: int, strategy: str, rest: str = "hold",
                            reward_run_id: int | None = None, seed: int = 0, actor=None) -> dict:
    """Keep ``budget`` unjudged ready groups for annotators, hold back or pseudo-label the rest; returns a summary."""
    round = Round.objects.select_for_update().get(id=round_id)
    groups = list(CandidateGroup.objects.select_for_update().filter(
        round=round, status=CandidateGroup.Status.READY, judgments_count=0, active_reservations=0, is_gold=False)
        .order_by("id"))
    if not groups:
        raise ValidationError(ERR_NO_GROUPS.format(name=round.name))
    if strategy not in STRATEGIES:
        raise ValidationError({"strategy": ERR_STRATEGY})
    if rest not in RESTS:
        raise ValidationError({"rest": ERR_REST})
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= len(groups):
        raise ValidationError({"budget": ERR_BUDGET.format(n=len(groups))})
    run = RewardRun.objects.filter(id=reward_run_id, status=RewardRun.Status.DONE).first() if reward_run_id else None
    if run is None and (strategy == "active" or rest == "pseudo"):
        raise ValidationError({"reward_run": ERR_NEEDS_RUN.format(
            what="Active selection" if strategy == "active" else "Pseudo-labelling")})
    scores = group_scores(groups=groups, run=run) if run is not None else {}
    if strategy == "active":
        chosen = sorted(groups, key=lambda g: (_margin(scores[g.id]), g.id))[:budget]
    else:
        chosen = random.Random(seed).sample(groups, budget)
    chosen_ids = {g.id for g in chosen}
    others = [g for g in groups if g.id not in chosen_ids]
    pseudo_pairs = 0
    if rest == "pseudo":
        pseudo_pairs = _pseudo_label(groups=others, scores=scores)
        CandidateGroup.objects.filter(id__in=[g.id for g in others]).update(status=CandidateGroup.Status.DONE)
    else:
        CandidateGroup.objects.filter(id__in=[g.id for g in others]).update(status=CandidateGroup.Status.HELD)
    summary = {"strategy": strategy, "budget": budget, "rest": rest, "reward_run": run.id if run else None,
               "seed": seed, "to_annotators": len(chosen), "held": len(others) if rest == "hold" else 0,
               "pseudo_labelled": len(others) if rest == "pseudo" else 0, "pseudo_pairs": pseudo_pairs}
    round.config = {**round.config, "selection": summary}
    round.save(update_fields=["config", "updated_at"])
    _note(round, actor, (
        f"label selection: {len(chosen)} of {len(groups)} groups to annotators ({strategy}"
        f"{f', reward model {run.name}' if run else ''}), the rest {'held back' if rest == 'hold' else 'pseudo-labelled'}"))
    return summary


def _note(round: Round, actor, note: str) -> None:
    """A line in the round's status history (the status itself unchanged)."""
    RoundEvent.objects.create(round=round, from_status=round.status, to_status=round.status, actor=actor, note=note)


def _pseudo_label(*, groups: list[CandidateGroup], scores: dict[int, dict[int, float]]) -> int:
    """One pair per group from the reward model: its best over its worst candidate (overall score), source model."""
    pairs = []
    for g in groups:
        group = scores[g.id]
        ranked = sorted(group, key=group.get)
        if len(ranked) >= 2 and group[ranked[-1]] > group[ranked[0]]:
            pairs.append(PreferencePair(round_id=g.round_id, group=g, chosen_id=ranked[-1], rejected_id=ranked[0],
                                        weight=1.0, agreement=1.0, n_annotators=0,
                                        source=PreferencePair.Source.MODEL))
    PreferencePair.objects.bulk_create(pairs, ignore_conflicts=True)
    return len(pairs)


@transaction.atomic
def round_release_held(*, round_id: int, actor=None) -> int:
    """Send a round's held-back groups to annotators after all; returns how many."""
    round = Round.objects.select_for_update().get(id=round_id)
    n = CandidateGroup.objects.filter(round=round, status=CandidateGroup.Status.HELD).update(
        status=CandidateGroup.Status.READY)
    if n:
        _note(round, actor, f"{n} held-back groups sent to annotators")
    return n
