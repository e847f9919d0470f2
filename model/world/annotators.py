"""Scripted annotators: policies that turn per-clip scores into judgments in every annotation mode the app has.

    policy = AnnotatorPolicy(noise=0.05, position_bias=0.0, tie_rate=0.0)
    j = policy.judge(utilities=[0.8, 0.4, 0.6], mode="labels", rng=np.random.default_rng(0))
    j.outcome   # "labelled" (or "all_good" / "all_bad": a whole-group tie)
    j.labels    # per shown position: "preferred" / "neutral" / "non_preferred"
    j.ranks     # per shown position (mode "ranking"): 1 = best

The vocabulary is the app's (``annotation.agreement`` / ``annotation.models``; a test checks they agree), so a
judgment can be fed to the judgment service or to ``annotation.agreement.implied_pairs`` as it is. Candidates are
given in the order they are SHOWN; ``position_bias`` favours the first one shown (what QC's position-bias chart
measures).

- ``weights``: what the annotator cares about, {"ta": 1.0} by default (text alignment); utility = sum w * score.
- ``noise``: std of Gaussian noise added to each candidate's utility per judgment (annotators disagree).
- ``position_bias``: utility bonus of the first-shown candidate.
- ``tie_margin``: candidates whose noisy utilities are within this of the best (worst) are all preferred
  (non-preferred) in mode "labels"; a group whose spread is within it is a whole-group tie.
- ``tie_rate``: probability of answering a group with "all equally good" / "all bad" (by its mean utility) anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.world.detect import ClipScores

# the app's vocabulary (annotation.agreement, annotation.models.Judgment.Outcome / Round.Mode)
PREFERRED, NON_PREFERRED, NEUTRAL = "preferred", "non_preferred", "neutral"
LABELLED, ALL_GOOD, ALL_BAD = "labelled", "all_good", "all_bad"
MODE_LABELS, MODE_BEST_WORST, MODE_RANKING = "labels", "best_worst", "ranking"
MODES = (MODE_LABELS, MODE_BEST_WORST, MODE_RANKING)
ASPECTS = ("vq", "mq", "ta")  # the app's per-aspect judgments (annotation.agreement.ASPECTS)


@dataclass(frozen=True)
class Judgment:
    """One annotator's answer for a group, per shown position."""

    outcome: str
    labels: list[str] = field(default_factory=list)
    ranks: list[int | None] = field(default_factory=list)


def utility(scores: ClipScores, weights: dict[str, float]) -> float:
    """Weighted sum of a clip's scores; an unscorable clip is worth 0."""
    if not scores.scorable:
        return 0.0
    return float(sum(w * (getattr(scores, k) or 0.0) for k, w in weights.items()))


@dataclass(frozen=True)
class AnnotatorPolicy:
    weights: dict[str, float] = field(default_factory=lambda: {"ta": 1.0})
    noise: float = 0.0
    position_bias: float = 0.0
    tie_margin: float = 1e-6
    tie_rate: float = 0.0
    good_threshold: float = 0.5  # a whole-group tie is "all good" when the mean utility reaches this

    def utilities(self, scores: list[ClipScores]) -> list[float]:
        return [utility(s, self.weights) for s in scores]

    def judge(self, *, utilities: list[float], mode: str, rng: np.random.Generator) -> Judgment:
        """Judge one group of candidates, given in shown order, from their (noise-free) utilities."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        u = np.asarray(utilities, dtype=np.float64)
        if len(u) < 2:
            raise ValueError("a group has at least two candidates")
        noisy = u + rng.normal(0.0, self.noise, len(u)) if self.noise > 0 else u.copy()
        noisy[0] += self.position_bias
        group_tie = noisy.max() - noisy.min() <= self.tie_margin
        if rng.random() < self.tie_rate or (group_tie and mode != MODE_RANKING):
            return Judgment(outcome=ALL_GOOD if u.mean() >= self.good_threshold else ALL_BAD)
        n = len(u)
        if mode == MODE_RANKING:
            order = sorted(range(n), key=lambda i: (-noisy[i], rng.random()))
            ranks = [0] * n
            for r, i in enumerate(order):
                ranks[i] = r + 1
            return Judgment(outcome=LABELLED, labels=[NEUTRAL] * n, ranks=ranks)
        if mode == MODE_BEST_WORST:
            best, worst = int(np.argmax(noisy)), int(np.argmin(noisy))
            labels = [PREFERRED if i == best else NON_PREFERRED if i == worst else NEUTRAL for i in range(n)]
            return Judgment(outcome=LABELLED, labels=labels, ranks=[None] * n)
        hi, lo = noisy.max(), noisy.min()
        labels = [PREFERRED if v >= hi - self.tie_margin else NON_PREFERRED if v <= lo + self.tie_margin else NEUTRAL
                  for v in noisy]
        return Judgment(outcome=LABELLED, labels=labels, ranks=[None] * n)

    def judge_clips(self, scores: list[ClipScores], *, mode: str, rng: np.random.Generator) -> Judgment:
        return self.judge(utilities=self.utilities(scores), mode=mode, rng=rng)

    def aspect_labels(self, scores: list[ClipScores], *, rng: np.random.Generator,
                      margin: float = 0.05) -> list[dict[str, str]]:
        """Per-aspect judgments (the app's round setting), per shown position: for each of VQ, MQ, TA a candidate
        is "preferred" (better than the others) when its noisy score is above the group's median by more than
        ``margin``, "non_preferred" when below it by more, else "neutral" (the same). Unscorable clips count 0."""
        out: list[dict[str, str]] = [{} for _ in scores]
        for aspect in ASPECTS:
            v = np.array([(getattr(s, aspect) or 0.0) if s.scorable else 0.0 for s in scores], dtype=np.float64)
            if self.noise > 0:
                v = v + rng.normal(0.0, self.noise, len(v))
            mid = float(np.median(v))
            for i, x in enumerate(v):
                out[i][aspect] = PREFERRED if x > mid + margin else NON_PREFERRED if x < mid - margin else NEUTRAL
        return out


class RandomAnnotator(AnnotatorPolicy):
    """Ignores the videos: uniformly random utilities (the closed loop's random-label control)."""

    def judge(self, *, utilities: list[float], mode: str, rng: np.random.Generator) -> Judgment:
        return super().judge(utilities=list(rng.random(len(utilities))), mode=mode, rng=rng)
