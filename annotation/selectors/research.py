"""Reads for the researcher's pages: the loop's lists, a DPO run's curves (several runs for overlays), a checkpoint's
lineage. Querysets are built here, never in a view."""

from __future__ import annotations

from django.db.models import Count, Prefetch, Q, QuerySet

from annotation.models import (
    Candidate,
    CandidateGroup,
    Category,
    Checkpoint,
    DPOMetric,
    DPORun,
    Prompt,
    RewardMetric,
    RewardRun,
    RewardScore,
    Round,
)

# The TRL metric names the run page draws (one chart each; every run overlaid on it).
CURVE_KEYS = ("loss", "rewards/accuracies", "rewards/margins")


def research_overview(*, limit: int = 50) -> dict:
    return {
        "rounds": Round.objects.select_related("policy_checkpoint").order_by("-id")[:limit],
        "runs": DPORun.objects.select_related("init_checkpoint", "output_checkpoint").order_by("-id")[:limit],
        "reward_runs": RewardRun.objects.select_related("init_checkpoint").order_by("-id")[:limit],
        "checkpoints": Checkpoint.objects.select_related("parent").order_by("-id")[:limit],
        "prompt_count": Prompt.objects.filter(is_active=True).count(),
    }


def checkpoint_list() -> QuerySet[Checkpoint]:
    return Checkpoint.objects.order_by("-id")


def category_list() -> QuerySet[Category]:
    return Category.objects.all()


def rounds_with_pairs() -> QuerySet[Round]:
    """Rounds a DPO run can train on, with their pair counts."""
    return (Round.objects.filter(status__in=[Round.Status.ANNOTATING, Round.Status.DONE])
            .annotate(n_pairs=Count("pairs")).order_by("-id"))


def round_group_status_counts(*, round: Round) -> QuerySet:
    return round.groups.values("status").annotate(n=Count("id")).order_by("status")


def round_groups_unusable(*, round: Round, limit: int = 20) -> list[dict]:
    """The round's ``unusable`` groups (generation left fewer than two usable candidates), each with why: its
    candidates' status, screening flags and error, and whether flagged ones are excluded by the round."""
    groups = (round.groups.filter(status=CandidateGroup.Status.UNUSABLE).select_related("prompt").order_by("id")
              .prefetch_related(Prefetch("candidates", queryset=Candidate.objects.order_by("id")))[:limit])
    rows = []
    for g in groups:
        cands = list(g.candidates.all())
        rows.append({
            "group": g, "prompt": g.prompt_text or g.prompt.text, "candidates": cands,
            "usable": sum(c.status == Candidate.Status.READY and not (round.exclude_flagged and c.screening_flags)
                          for c in cands),
            "failed": sum(c.status == Candidate.Status.FAILED for c in cands),
            "flagged_excluded": sum(c.status == Candidate.Status.READY and bool(c.screening_flags)
                                    for c in cands) if round.exclude_flagged else 0,
        })
    return rows


def dpo_run_get(*, run_id: int) -> DPORun | None:
    return (DPORun.objects.select_related("init_checkpoint", "reference_checkpoint", "output_checkpoint")
            .filter(id=run_id).first())


def dpo_runs_for_compare(*, exclude_id: int, limit: int = 50) -> list[tuple[int, str]]:
    """Other runs a researcher may overlay on a run's curves (newest first)."""
    return list(DPORun.objects.exclude(id=exclude_id).order_by("-id").values_list("id", "name")[:limit])


def dpo_run_curves(*, run_ids: list[int]) -> dict[int, list[tuple[int, dict]]]:
    """Each run's logged steps as (step, values), in step order; one query for all runs."""
    curves: dict[int, list[tuple[int, dict]]] = {run_id: [] for run_id in run_ids}
    rows = DPOMetric.objects.filter(run_id__in=run_ids).order_by("run_id", "step").values_list("run_id", "step", "values")
    for run_id, step, values in rows:
        curves[run_id].append((step, values))
    return curves


def rounds_for_reward_runs() -> QuerySet[Round]:
    """Rounds a reward run can learn from, with their pairs and the pairs that carry per-aspect outcomes."""
    return (Round.objects.filter(status__in=[Round.Status.ANNOTATING, Round.Status.TRAINING, Round.Status.DONE])
            .annotate(n_pairs=Count("pairs"), n_aspect_pairs=Count("pairs", filter=~Q(pairs__aspects={})))
            .order_by("-id"))


def reward_run_get(*, run_id: int) -> RewardRun | None:
    return RewardRun.objects.select_related("init_checkpoint", "manifest_export").filter(id=run_id).first()


def reward_run_curve(*, run_id: int) -> list[tuple[int, dict]]:
    """The run's logged steps as (step, values), in step order."""
    return list(RewardMetric.objects.filter(run_id=run_id).order_by("step").values_list("step", "values"))


def checkpoint_lineage(*, checkpoint: Checkpoint, limit: int = 50) -> list[Checkpoint]:
    """The checkpoint, its parent, the parent's parent... (at most ``limit``)."""
    lineage, node = [], checkpoint
    while node is not None and len(lineage) < limit:
        lineage.append(node)
        node = node.parent
    return lineage


def checkpoint_produced_by(*, checkpoint: Checkpoint) -> DPORun | None:
    return DPORun.objects.filter(output_checkpoint=checkpoint).first()


def round_choices(*, limit: int = 200) -> QuerySet:
    """(id, name, kind) of the newest rounds, for filter forms."""
    return Round.objects.order_by("-id").values("id", "name", "kind")[:limit]


def category_choices() -> QuerySet:
    """(slug, name) of every category, by name."""
    return Category.objects.order_by("name").values_list("slug", "name")


def round_reward_scores(*, round_id: int, limit: int = 200) -> list[dict]:
    """Per reward run that scored this round (newest first): its aspects and each scored candidate's prompt, seed and
    scores (researchers only); two queries."""
    rows = list(RewardScore.objects.filter(candidate__group__round_id=round_id)
                .select_related("run", "candidate__group__prompt")
                .order_by("-run_id", "candidate__group_id", "candidate__seed")[:limit])
    runs: dict[int, dict] = {}
    for r in rows:
        entry = runs.setdefault(r.run_id, {"run": r.run, "aspects": list(r.run.config.get("aspects", [])), "rows": []})
        entry["rows"].append({"candidate_id": r.candidate_id, "prompt": r.candidate.group.prompt.text,
                              "seed": r.candidate.seed, "scores": [r.scores.get(a) for a in entry["aspects"]]})
    return list(runs.values())


def reward_runs_done() -> QuerySet[RewardRun]:
    return RewardRun.objects.filter(status=RewardRun.Status.DONE).order_by("-id")


def reward_means_by_checkpoint(*, checkpoint_ids: list[int], round_ids: list[int] | None = None) -> dict:
    """The leaderboard's reward-model column: the newest reward run that scored candidates of these checkpoints (in
    ``round_ids`` when given), and per checkpoint the mean overall score of its scored candidates and their count."""
    from django.db.models import Avg, FloatField
    from django.db.models.fields.json import KeyTextTransform
    from django.db.models.functions import Cast

    qs = RewardScore.objects.filter(candidate__checkpoint_id__in=checkpoint_ids, scores__has_key="overall")
    if round_ids:
        qs = qs.filter(candidate__group__round_id__in=round_ids)
    run_id = qs.order_by("-run_id").values_list("run_id", flat=True).first()
    if run_id is None:
        return {"run": None, "means": {}}
    rows = (qs.filter(run_id=run_id).values("candidate__checkpoint_id")
            .annotate(mean=Avg(Cast(KeyTextTransform("overall", "scores"), FloatField())), n=Count("id")))
    return {"run": RewardRun.objects.get(id=run_id),
            "means": {r["candidate__checkpoint_id"]: (r["mean"], r["n"]) for r in rows}}
