"""Quality-control statistics: per annotator (gold accuracy, agreement with peers, position bias, time, playback
coverage) and per round and category (Krippendorff's alpha, pairwise agreement). Each function runs a fixed number
of queries; the ones that look at many rows read at most ``QC_SAMPLE_LIMIT`` recent rows."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from itertools import combinations

from django.db import connection
from django.utils import timezone

from annotation.agreement import (
    ASPECT_NAMES,
    ASPECTS,
    LABEL_VALUE,
    LABELLED,
    MODE_RANKING,
    LabelRow,
    implied_pairs,
    krippendorff_alpha,
    label_aspects,
    pairwise_agreement,
)
from annotation.conf import conf
from annotation.models import AnnotatorProfile, CandidateLabel, Judgment, PreferencePair, RewardRun, RewardScore, Round


@dataclass
class AnnotatorStats:
    judgments: int = 0
    today: int = 0
    skipped: int = 0
    median_time_s: float | None = None
    mean_coverage: float | None = None
    gold_n: int = 0
    gold_accuracy: float | None = None
    peer_n: int = 0
    peer_agreement: float | None = None
    position_n: int = 0
    position_bias: float | None = None  # rate at which the first-shown candidate wins

    def as_dict(self) -> dict:
        return asdict(self)


def gold_score(*, gold_answer: dict, outcome: str, pairs: set[tuple[int, int]]) -> float | None:
    """1.0 = the judgment matches the known answer; for pair answers, the share of gold pairs implied."""
    preferred, non_preferred = gold_answer.get("preferred") or [], gold_answer.get("non_preferred") or []
    gold_pairs = {(int(a), int(b)) for a in preferred for b in non_preferred}
    if gold_pairs:
        return len(gold_pairs & pairs) / len(gold_pairs)
    if gold_answer.get("outcome"):
        return 1.0 if outcome == gold_answer["outcome"] else 0.0
    return None


def _labels_by_judgment(judgment_ids) -> dict[int, list[LabelRow]]:
    out: dict[int, list[LabelRow]] = defaultdict(list)
    for jid, cand, label, rank in CandidateLabel.objects.filter(judgment_id__in=judgment_ids).values_list(
        "judgment_id", "candidate_id", "label", "rank"
    ):
        out[jid].append(LabelRow(cand, label, rank))
    return out


# What annotators see of their own gold accuracy: only gold judged before today (UTC), and only once there are this
# many, so neither the count nor the accuracy changes right after a submit (no way to tell which group was gold).
OWN_GOLD_MIN = 10


def annotator_gold_accuracy(*, annotator_id: int, judged_before=None) -> tuple[int, float | None]:
    qs = Judgment.objects.filter(annotator_id=annotator_id, group__is_gold=True)
    if judged_before is not None:
        qs = qs.filter(created_at__lt=judged_before)
    rows = list(
        qs
        .exclude(outcome=Judgment.Outcome.SKIPPED)
        .order_by("-created_at")
        .values_list("id", "outcome", "group__gold_answer", "group__round__annotation_mode")[:1000]
    )
    labels = _labels_by_judgment([r[0] for r in rows])
    scores = []
    for jid, outcome, answer, mode in rows:
        score = gold_score(gold_answer=answer or {}, outcome=outcome, pairs=implied_pairs(outcome=outcome, mode=mode, labels=labels[jid]))
        if score is not None:
            scores.append(score)
    return len(scores), (sum(scores) / len(scores) if scores else None)


def annotator_peer_agreement(*, annotator_id: int, limit: int = 2000) -> tuple[int, float | None]:
    """Over the annotator's recent labelled judgments: the share of the pairs they implied on which the other
    annotators of the group (their own vote removed) lean the same way; pairs the peers are split on are left out."""
    rows = list(
        Judgment.objects.filter(annotator_id=annotator_id, outcome=LABELLED, group__is_gold=False)
        .order_by("-created_at")
        .values_list("id", "group_id", "group__round__annotation_mode")[:limit]
    )
    labels = _labels_by_judgment([r[0] for r in rows])
    tallies = {
        (c, r): (f, a)
        for c, r, f, a in PreferencePair.objects.filter(
            group_id__in={r[1] for r in rows}, source=PreferencePair.Source.HUMAN
        ).values_list("chosen_id", "rejected_id", "votes_for", "votes_against")
    }
    agree = total = 0
    for jid, _group, mode in rows:
        for a, b in implied_pairs(outcome=LABELLED, mode=mode, labels=labels[jid]):
            if (a, b) in tallies:
                peers_for, peers_against = tallies[(a, b)][0] - 1, tallies[(a, b)][1]
            elif (b, a) in tallies:
                peers_for, peers_against = tallies[(b, a)][1] - 1, tallies[(b, a)][0]
            else:
                continue
            if peers_for == peers_against:
                continue
            total += 1
            agree += peers_for > peers_against
    return total, (agree / total if total else None)


_ANNOTATOR_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE j.created_at >= %(today)s),
       count(*) FILTER (WHERE j.outcome = 'skipped'),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY j.time_spent_ms) FILTER (WHERE j.outcome <> 'skipped')
FROM annotation_judgment j WHERE j.annotator_id = %(user)s
"""
_POSITION_SQL = """
SELECT count(*) FILTER (WHERE l.shown_position = 0 AND (l.label = 'preferred' OR l.rank = 1)),
       count(DISTINCT l.judgment_id) FILTER (WHERE l.shown_position = 0),
       avg(l.playback_coverage)
FROM annotation_candidatelabel l JOIN annotation_judgment j ON j.id = l.judgment_id
WHERE j.annotator_id = %(user)s AND j.outcome = 'labelled'
"""


def annotator_stats(*, annotator_id: int, with_peers: bool = True, own: bool = False) -> AnnotatorStats:
    """An annotator's statistics; ``own``: as shown to the annotator themself (gold: a delayed aggregate only)."""
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    stats = AnnotatorStats()
    with connection.cursor() as cursor:
        cursor.execute(_ANNOTATOR_SQL, {"user": annotator_id, "today": today})
        stats.judgments, stats.today, stats.skipped, median = cursor.fetchone()
        stats.median_time_s = median / 1000.0 if median is not None else None
        cursor.execute(_POSITION_SQL, {"user": annotator_id})
        wins, n, coverage = cursor.fetchone()
        stats.position_n = n
        stats.position_bias = wins / n if n else None
        stats.mean_coverage = float(coverage) if coverage is not None else None
    if own:
        n, accuracy = annotator_gold_accuracy(annotator_id=annotator_id, judged_before=today)
        if n >= OWN_GOLD_MIN:
            stats.gold_n, stats.gold_accuracy = n, accuracy
    else:
        stats.gold_n, stats.gold_accuracy = annotator_gold_accuracy(annotator_id=annotator_id)
    if with_peers:
        stats.peer_n, stats.peer_agreement = annotator_peer_agreement(annotator_id=annotator_id)
    return stats


_ROUND_ANNOTATORS_SQL = """
SELECT j.annotator_id, coalesce(p.pseudonym, ''), coalesce(p.is_paused, false),
       count(*), count(*) FILTER (WHERE j.outcome = 'skipped'),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY j.time_spent_ms) FILTER (WHERE j.outcome <> 'skipped')
FROM annotation_judgment j JOIN annotation_candidategroup g ON g.id = j.group_id
LEFT JOIN annotation_annotatorprofile p ON p.user_id = j.annotator_id
WHERE g.round_id = %(round)s
GROUP BY j.annotator_id, p.pseudonym, p.is_paused ORDER BY count(*) DESC LIMIT 200
"""


def round_quality(*, round: Round) -> dict:
    """Per category: Krippendorff's alpha (nominal and ordinal) and pairwise agreement over candidate labels
    (units = candidates, coders = annotators); per annotator of the round: counts, median time, QC figures."""
    limit = conf("QC_SAMPLE_LIMIT")
    rows = (
        CandidateLabel.objects.filter(judgment__group__round=round, judgment__group__is_gold=False)
        .exclude(judgment__outcome=Judgment.Outcome.SKIPPED)
        .order_by("-judgment_id")
        .values_list("candidate_id", "label", "rank", "judgment__group__prompt__category__name", "aspects")[:limit]
    )
    ranking = round.annotation_mode == MODE_RANKING
    units: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    aspect_units: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for candidate_id, label, rank, category, aspects in rows:
        value = float(-rank) if ranking and rank is not None else float(LABEL_VALUE.get(label, 1))
        units[category or "(none)"][candidate_id].append(value)
        units["all"][candidate_id].append(value)
        for aspect, aspect_label in label_aspects(aspects).items():
            aspect_units[aspect][candidate_id].append(float(LABEL_VALUE.get(aspect_label, 1)))
    categories = []
    for name in sorted(units, key=lambda n: (n != "all", n)):
        u = units[name]
        categories.append(
            {
                "category": name,
                "units": sum(1 for v in u.values() if len(v) >= 2),
                "alpha_nominal": krippendorff_alpha(u, level="nominal"),
                "alpha_ordinal": krippendorff_alpha(u, level="ordinal"),
                "pairwise_agreement": pairwise_agreement(u),
            }
        )
    # per aspect (rounds with aspect judgments): the same figures over the per-aspect labels
    aspects = [
        {"aspect": aspect, "name": ASPECT_NAMES[aspect], "units": sum(1 for v in u.values() if len(v) >= 2),
         "alpha_ordinal": krippendorff_alpha(u, level="ordinal"), "pairwise_agreement": pairwise_agreement(u)}
        for aspect in ASPECTS if (u := aspect_units.get(aspect))
    ]
    with connection.cursor() as cursor:
        cursor.execute(_ROUND_ANNOTATORS_SQL, {"round": round.pk})
        annotators = [
            {"annotator_id": a, "pseudonym": p, "is_paused": paused, "judgments": n, "skipped": s,
             "median_time_s": (m / 1000.0 if m is not None else None)}
            for a, p, paused, n, s, m in cursor.fetchall()
        ]
    for row in annotators[:50]:
        stats = annotator_stats(annotator_id=row["annotator_id"], with_peers=True)
        row.update(gold_accuracy=stats.gold_accuracy, gold_n=stats.gold_n, peer_agreement=stats.peer_agreement,
                   position_bias=stats.position_bias, mean_coverage=stats.mean_coverage)
    return {"round": round, "categories": categories, "aspects": aspects, "annotators": annotators,
            "sampled_labels": len(rows)}


def reward_human_agreement(*, round: Round, limit: int = 20000) -> dict | None:
    """How often the newest reward run that scored this round agrees with the humans (a second view of annotator
    quality): per annotator, the share of the pairs their judgments imply whose winner the reward model scores
    higher (overall score); per aspect, the share of per-aspect label pairs (one candidate marked better than
    another on the aspect by the same annotator) the aspect's score orders the same way. None without scores."""
    run_id = (RewardScore.objects.filter(candidate__group__round=round).order_by("-run_id")
              .values_list("run_id", flat=True).first())
    if run_id is None:
        return None
    scores = dict(RewardScore.objects.filter(run_id=run_id, candidate__group__round=round)
                  .values_list("candidate_id", "scores"))
    rows = (CandidateLabel.objects.filter(judgment__group__round=round, judgment__group__is_gold=False)
            .exclude(judgment__outcome=Judgment.Outcome.SKIPPED)
            .order_by("judgment_id").values_list("judgment_id", "judgment__annotator_id", "judgment__outcome",
                                                  "candidate_id", "label", "rank", "aspects")[:limit])
    by_judgment: dict[int, dict] = {}
    for jid, annotator_id, outcome, cid, label, rank, aspects in rows:
        j = by_judgment.setdefault(jid, {"annotator": annotator_id, "outcome": outcome, "labels": [], "aspects": {}})
        j["labels"].append(LabelRow(cid, label, rank))
        j["aspects"][cid] = label_aspects(aspects)
    per_annotator: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    per_aspect: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for j in by_judgment.values():
        for w, lo in implied_pairs(outcome=j["outcome"], mode=round.annotation_mode, labels=j["labels"]):
            if "overall" in scores.get(w, {}) and "overall" in scores.get(lo, {}):
                tally = per_annotator[j["annotator"]]
                tally[0] += scores[w]["overall"] > scores[lo]["overall"]
                tally[1] += 1
        for aspect in ASPECTS:
            marked = [(cid, LABEL_VALUE[a[aspect]]) for cid, a in j["aspects"].items()
                      if aspect in a and aspect in scores.get(cid, {})]
            for (c1, v1), (c2, v2) in combinations(marked, 2):
                if v1 != v2:
                    better, worse = (c1, c2) if v1 > v2 else (c2, c1)
                    per_aspect[aspect][0] += scores[better][aspect] > scores[worse][aspect]
                    per_aspect[aspect][1] += 1
    names = dict(AnnotatorProfile.objects.filter(user_id__in=list(per_annotator)).values_list("user_id", "pseudonym"))
    return {
        "run": RewardRun.objects.get(id=run_id),
        "annotators": [{"annotator_id": a, "pseudonym": names.get(a, ""), "pairs": n, "agreement": k / n}
                       for a, (k, n) in sorted(per_annotator.items(), key=lambda kv: -kv[1][1]) if n],
        "aspects": [{"aspect": a, "name": ASPECT_NAMES[a], "pairs": n, "agreement": k / n}
                    for a, (k, n) in per_aspect.items() if n],
    }
