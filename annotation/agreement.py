"""Pure functions: the pairs a judgment implies, their aggregation across annotators, and Krippendorff's alpha
(through the ``krippendorff`` package).

No Django imports: the services and selectors feed these with plain tuples, and the tests check them by hand.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from itertools import combinations

import krippendorff
import numpy as np

PREFERRED, NON_PREFERRED, NEUTRAL = "preferred", "non_preferred", "neutral"
LABELLED = "labelled"
MODE_LABELS, MODE_BEST_WORST, MODE_RANKING = "labels", "best_worst", "ranking"

# Ordinal value of a candidate label (higher is better), used for alpha and pairwise agreement.
LABEL_VALUE = {NON_PREFERRED: 0, NEUTRAL: 1, PREFERRED: 2}

# Per-aspect judgments (VideoAlign's three): each candidate gets one of the labels above per aspect; a pair's outcome on
# an aspect is which of its two candidates the annotators rate higher on it, or "same".
ASPECTS = ("vq", "mq", "ta")
ASPECT_NAMES = {"vq": "visual quality", "mq": "motion quality", "ta": "text alignment"}
CHOSEN, REJECTED, SAME = "chosen", "rejected", "same"


@dataclass(frozen=True)
class LabelRow:
    candidate_id: int
    label: str
    rank: int | None = None


def implied_pairs(*, outcome: str, mode: str, labels: Iterable[LabelRow]) -> set[tuple[int, int]]:
    """Every (winner, loser) the judgment implies. Ties, "all equally good", "all bad" and skips imply none.

    - labels: each preferred x each non-preferred;
    - best_worst: best > every other, every other > worst (so best > worst);
    - ranking: every candidate > each candidate ranked below it."""
    if outcome != LABELLED:
        return set()
    labels = list(labels)
    if mode == MODE_RANKING:
        ranked = sorted((lab.rank, lab.candidate_id) for lab in labels if lab.rank is not None)
        return {(a, b) for (ra, a), (rb, b) in combinations(ranked, 2) if ra < rb}
    preferred = [lab.candidate_id for lab in labels if lab.label == PREFERRED]
    non_preferred = [lab.candidate_id for lab in labels if lab.label == NON_PREFERRED]
    pairs = {(w, lo) for w in preferred for lo in non_preferred}
    if mode == MODE_BEST_WORST:
        others = [lab.candidate_id for lab in labels if lab.label == NEUTRAL]
        pairs |= {(w, o) for w in preferred for o in others} | {(o, lo) for o in others for lo in non_preferred}
    return pairs


@dataclass(frozen=True)
class AggregatedPair:
    chosen: int
    rejected: int
    votes_for: int
    votes_against: int
    n_annotators: int
    judgment_ids: tuple[int, ...]

    @property
    def agreement(self) -> float:
        """Share of the group's (non-skipped) annotators who imply this order."""
        return self.votes_for / self.n_annotators if self.n_annotators else 0.0

    @property
    def weight(self) -> float:
        """Confidence in [0, 1]: the net margin of votes over the annotators."""
        return max(self.votes_for - self.votes_against, 0) / self.n_annotators if self.n_annotators else 0.0


@dataclass(frozen=True)
class Aggregate:
    pairs: list[AggregatedPair]
    n_annotators: int
    conflicts: list[tuple[int, int]]  # unordered pairs whose majority is below the threshold

    @property
    def disagreement(self) -> bool:
        return bool(self.conflicts)


def aggregate(*, judgments: Iterable[tuple[int, set[tuple[int, int]], bool]], min_majority: float) -> Aggregate:
    """``judgments``: (judgment id, implied pairs, counts as an annotator (not skipped)).

    A pair is stored in its majority direction; an exact tie stores nothing; both directions voted with the majority
    holding less than ``min_majority`` of the votes on that pair is a conflict."""
    votes: dict[tuple[int, int], list[int]] = defaultdict(list)
    n = 0
    for judgment_id, pairs, counts in judgments:
        n += 1 if counts else 0
        for pair in pairs:
            votes[pair].append(judgment_id)
    out, conflicts, seen = [], [], set()
    for a, b in sorted(votes):
        key = (min(a, b), max(a, b))
        if key in seen:
            continue
        seen.add(key)
        ab, ba = votes.get((a, b), []), votes.get((b, a), [])
        if ab and ba and max(len(ab), len(ba)) / (len(ab) + len(ba)) < min_majority:
            conflicts.append(key)
        if len(ab) == len(ba):
            continue
        (w, lo, win, lose) = (a, b, ab, ba) if len(ab) > len(ba) else (b, a, ba, ab)
        out.append(AggregatedPair(w, lo, len(win), len(lose), n, tuple(sorted(win))))
    return Aggregate(out, n, conflicts)


def label_aspects(value) -> dict[str, str]:
    """The valid entries of a stored per-aspect label ({aspect: preferred / neutral / non-preferred}); anything else
    (not a dict, another aspect, another value) is left out, so an odd stored value never breaks a reader."""
    if not isinstance(value, dict):
        return {}
    return {a: v for a, v in value.items() if a in ASPECTS and isinstance(v, str) and v in LABEL_VALUE}


def pair_aspects(value) -> dict[str, str]:
    """The valid entries of a stored per-aspect pair outcome ({aspect: chosen / rejected / same})."""
    if not isinstance(value, dict):
        return {}
    return {a: v for a, v in value.items() if a in ASPECTS and v in (CHOSEN, REJECTED, SAME)}


def label_segments(value) -> list[str]:
    """A stored per-segment label list with anything that is not a label read as neutral ([] when not a list)."""
    if not isinstance(value, list):
        return []
    return [v if isinstance(v, str) and v in LABEL_VALUE else NEUTRAL for v in value]


def pair_segments(value) -> list[str]:
    """A stored per-segment pair outcome list with anything unknown read as same ([] when not a list)."""
    if not isinstance(value, list):
        return []
    return [v if v in (CHOSEN, REJECTED, SAME) else SAME for v in value]


def _compare(a: str, b: str) -> str:
    d = LABEL_VALUE[a] - LABEL_VALUE[b]
    return CHOSEN if d > 0 else REJECTED if d < 0 else SAME


def _majority(votes: dict[str, int]) -> str:
    """The most voted of chosen / rejected / same; a tie between the top outcomes is same."""
    top = max(votes.values())
    winners = [k for k in (CHOSEN, REJECTED, SAME) if votes.get(k, 0) == top]
    return winners[0] if len(winners) == 1 else SAME


def aspect_outcomes(*, chosen: int, rejected: int, judgments: Iterable[dict[int, dict[str, str]]]) -> dict[str, str]:
    """Per aspect, the majority comparison of ``chosen`` with ``rejected`` over ``judgments`` (each: candidate id ->
    that annotator's per-aspect labels; a judgment without labels for both candidates on an aspect does not vote on
    it). Each vote is CHOSEN, REJECTED or SAME by the labels' order (preferred > neutral > non-preferred); the most
    voted wins, and a tie between outcomes is SAME. Aspects nobody voted on are absent."""
    votes: dict[str, dict[str, int]] = defaultdict(lambda: {CHOSEN: 0, REJECTED: 0, SAME: 0})
    for labels in judgments:
        a, b = label_aspects(labels.get(chosen)), label_aspects(labels.get(rejected))
        for aspect in ASPECTS:
            if aspect in a and aspect in b:
                votes[aspect][_compare(a[aspect], b[aspect])] += 1
    return {aspect: _majority(votes[aspect]) for aspect in ASPECTS if aspect in votes}


def segment_outcomes(*, chosen: int, rejected: int, judgments: Iterable[dict[int, list[str]]]) -> list[str]:
    """Per segment, the majority comparison of ``chosen`` with ``rejected`` (as ``aspect_outcomes``, each judgment
    giving candidate id -> that annotator's per-segment labels); as long as the longest list voted, [] when none."""
    votes: list[dict[str, int]] = []
    for labels in judgments:
        a, b = label_segments(labels.get(chosen)), label_segments(labels.get(rejected))
        for k, (x, y) in enumerate(zip(a, b)):  # noqa: B905 - both lists have the round's segment count
            if k == len(votes):
                votes.append({CHOSEN: 0, REJECTED: 0, SAME: 0})
            votes[k][_compare(x, y)] += 1
    return [_majority(v) for v in votes]


# -- Krippendorff's alpha ---------------------------------------------------------------------------------------------
def krippendorff_alpha(units: dict[Hashable, list[float]], *, level: str = "nominal") -> float | None:
    """Krippendorff's alpha for ``units`` (unit -> the values its coders gave; missing values simply absent).

    Computed by the ``krippendorff`` package from the units' value counts. Units with fewer than two values are not
    pairable and ignored; ``level`` is "nominal" or "ordinal" (ordinal distances use the sorted values' ranks). None
    when it is undefined (fewer than two pairable values, or a single value used throughout)."""
    if level not in ("nominal", "ordinal"):
        raise ValueError(f"level must be 'nominal' or 'ordinal', not {level!r}")
    pairable = [values for values in units.values() if len(values) >= 2]
    domain = sorted({v for values in pairable for v in values})
    if len(domain) < 2:
        return None
    index = {v: i for i, v in enumerate(domain)}
    counts = np.zeros((len(pairable), len(domain)))
    for row, values in enumerate(pairable):
        for v in values:
            counts[row, index[v]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = float(krippendorff.alpha(value_counts=counts, value_domain=domain, level_of_measurement=level))
    return None if not np.isfinite(alpha) else alpha


def pairwise_agreement(units: dict[Hashable, list[float]]) -> float | None:
    """Percent agreement: over every unit and every pair of its coders, the share of pairs that gave the same value."""
    agree = total = 0
    for values in units.values():
        for a, b in combinations(values, 2):
            total += 1
            agree += a == b
    return agree / total if total else None
