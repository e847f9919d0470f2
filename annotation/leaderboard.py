"""Checkpoint leaderboard: Bradley-Terry strengths from human judgments on shared prompts, bootstrap intervals
(prompts resampled), an observed win-rate matrix, per category.

What counts as a comparison: two candidates of *different* checkpoints shown together in one group and judged by one
annotator (evaluation rounds put policy and reference side by side from the same seed). Per labelled judgment and per
such candidate pair: the implied order (``annotation.agreement.implied_pairs``) is a win; no implied order (both
neutral, both preferred...) is a tie; "all equally good" / "all bad" make every such pair a tie. Ties count half to
each side (Step-Video's evaluation: "no preference scored 0.5 each"). Skips count nothing.

Candidates of different checkpoints that were never shown together (another round, another group) are never compared
directly: their labels are relative to their own group, so mixing them would be meaningless. Across rounds, the same
prompt's comparisons are pooled into one bootstrap unit, since they share the prompt's difficulty; resampling prompts,
not judgments, gives intervals that account for that correlation.

Fit: the BT maximum likelihood by choix (iterative Luce spectral ranking, Maystre & Grossglauser 2015, on the dense
win matrix), with a small symmetric prior (``prior`` wins each way on every pair that met) so a checkpoint that never
won still has a finite strength. Strengths are reported as centred log-strengths ``theta`` (P(i beats j) = sigmoid(theta_i - theta_j))
and on an Elo-like scale (400 / ln 10 per unit, 1000 at the mean).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import choix
import numpy as np
from django.db.models import Count
from scipy.sparse.csgraph import connected_components

from annotation.agreement import LABELLED, LabelRow, implied_pairs
from annotation.models import Candidate, CandidateLabel, Checkpoint, Judgment

ELO_SCALE = 400.0 / math.log(10.0)
TIE_OUTCOMES = (Judgment.Outcome.ALL_GOOD, Judgment.Outcome.ALL_BAD)


# -- pure numerics ------------------------------------------------------------------------------------------------------
def bt_fit(wins: np.ndarray, *, prior: float = 0.1, initial: np.ndarray | None = None, tol: float = 1e-10) -> np.ndarray:
    """Bradley-Terry log-strengths (K,) from one win matrix (K, K), each connected part centred.

    ``wins[i, j]`` = (fractional) wins of i over j. The maximum-likelihood fit is choix's ILSR on the dense matrix;
    ``prior`` adds that many wins each way to every pair that met (0 = plain MLE, which diverges for a checkpoint
    that never won or never lost). A checkpoint without any comparison gets 0; checkpoints that were never compared,
    even through others, are in separate parts, each centred on 0. ``initial`` (K,) warm-starts the iterations."""
    w = np.asarray(wins, dtype=np.float64)
    met = (w + w.T) > 0
    w = w + prior * met
    theta = np.zeros(w.shape[0])
    n_parts, part = connected_components(met, directed=False)
    for p in range(n_parts):
        idx = np.flatnonzero(part == p)
        if len(idx) < 2:
            continue
        start = None if initial is None else initial[idx] - initial[idx].mean()
        params = choix.ilsr_pairwise_dense(w[np.ix_(idx, idx)], initial_params=start, max_iter=10_000, tol=tol)
        theta[idx] = params - params.mean()
    return theta


def bt_bootstrap(per_unit: np.ndarray, *, n_boot: int = 200, seed: int = 0, prior: float = 0.1,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of the log-strengths, resampling units (prompts) with replacement.

    ``per_unit``: (U, K, K) wins per prompt. Returns (low, high), each (K,). Each resample's fit starts from the
    full data's strengths (a few iterations each)."""
    units, k = per_unit.shape[0], per_unit.shape[1]
    if units == 0 or n_boot <= 0:
        return np.full(k, np.nan), np.full(k, np.nan)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(units, np.full(units, 1.0 / units), size=n_boot)  # (B, U) draws of each prompt
    resampled = (counts @ per_unit.reshape(units, k * k)).reshape(n_boot, k, k)  # (B, K, K)
    full = bt_fit(per_unit.sum(axis=0), prior=prior)
    thetas = np.stack([bt_fit(wins, prior=prior, initial=full, tol=1e-8) for wins in resampled])
    alpha = (1.0 - level) / 2.0
    return np.quantile(thetas, alpha, axis=0), np.quantile(thetas, 1.0 - alpha, axis=0)


# -- reading comparisons ------------------------------------------------------------------------------------------------
@dataclass
class Comparisons:
    checkpoints: list[int]  # index -> checkpoint id
    prompts: list[tuple[int, str]]  # index -> (prompt id, category slug or "")
    per_prompt: np.ndarray  # (U, K, K) wins (ties half)
    judgments: int
    ties: float  # number of tied comparisons


def comparisons_read(*, rounds: list[int] | None = None) -> Comparisons:
    """Every cross-checkpoint comparison in groups that hold candidates of at least two checkpoints (streamed)."""
    candidates = Candidate.objects.filter(group__round_id__in=rounds) if rounds else Candidate.objects.all()
    mixed = (
        candidates.order_by().values("group_id").annotate(n=Count("checkpoint_id", distinct=True))
        .filter(n__gte=2).values("group_id")
    )
    rows = (
        CandidateLabel.objects.filter(judgment__group_id__in=mixed)
        .exclude(judgment__outcome=Judgment.Outcome.SKIPPED)
        .order_by("judgment_id")
        .values_list("judgment_id", "judgment__outcome", "judgment__group__round__annotation_mode",
                     "judgment__group__prompt_id", "judgment__group__prompt__category__slug",
                     "candidate_id", "candidate__checkpoint_id", "label", "rank")
        .iterator(chunk_size=5000)
    )
    wins: dict[int, dict[tuple[int, int], float]] = defaultdict(lambda: defaultdict(float))
    category: dict[int, str] = {}
    checkpoints: set[int] = set()
    judgments, ties = 0, 0.0

    def flush(outcome, mode, prompt_id, labels, ckpt):
        nonlocal judgments, ties
        judgments += 1
        order = implied_pairs(outcome=outcome, mode=mode, labels=labels) if outcome == LABELLED else set()
        ids = [lab.candidate_id for lab in labels]
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                ca, cb = ckpt[a], ckpt[b]
                if ca == cb:
                    continue
                checkpoints.update((ca, cb))
                if (a, b) in order:
                    wins[prompt_id][(ca, cb)] += 1.0
                elif (b, a) in order:
                    wins[prompt_id][(cb, ca)] += 1.0
                else:  # tie: half to each
                    wins[prompt_id][(ca, cb)] += 0.5
                    wins[prompt_id][(cb, ca)] += 0.5
                    ties += 1

    current, state = None, None
    for jid, outcome, mode, prompt_id, cat, cand, ckpt_id, label, rank in rows:
        if jid != current:
            if state:
                flush(*state)
            current, state = jid, (outcome, mode, prompt_id, [], {})
            category[prompt_id] = cat or ""
        state[3].append(LabelRow(cand, label, rank))
        state[4][cand] = ckpt_id
    if state:
        flush(*state)

    ck = sorted(checkpoints)
    index = {c: i for i, c in enumerate(ck)}
    prompts = sorted(wins)
    per = np.zeros((len(prompts), len(ck), len(ck)))
    for u, pid in enumerate(prompts):
        for (a, b), v in wins[pid].items():
            per[u, index[a], index[b]] += v
    return Comparisons(ck, [(p, category[p]) for p in prompts], per, judgments, ties)


# -- the leaderboard -----------------------------------------------------------------------------------------------------
def _board(per: np.ndarray, names: list[str], ids: list[int], *, n_boot: int, seed: int, prior: float) -> dict:
    total = per.sum(axis=0)  # (K, K)
    present = (total + total.T).sum(axis=1) > 0
    keep = np.flatnonzero(present)
    per, total = per[:, keep][:, :, keep], total[np.ix_(keep, keep)]
    names, ids = [names[i] for i in keep], [ids[i] for i in keep]
    theta = bt_fit(total, prior=prior)
    low, high = bt_bootstrap(per, n_boot=n_boot, seed=seed, prior=prior)
    games = total + total.T
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(games > 0, total / np.where(games > 0, games, 1), np.nan)
    rows = []
    for i in range(len(ids)):
        played = games[i].sum()
        rows.append({
            "checkpoint_id": ids[i], "name": names[i],
            "strength": float(theta[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
            "elo": 1000.0 + ELO_SCALE * float(theta[i]),
            "elo_low": 1000.0 + ELO_SCALE * float(low[i]), "elo_high": 1000.0 + ELO_SCALE * float(high[i]),
            "comparisons": float(played), "score": float(total[i].sum() / played) if played else None,
        })
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["strength"])
    rows = [rows[i] for i in order]
    return {
        "checkpoints": rows,
        "win_matrix": {
            "names": [names[i] for i in order],
            "rates": [[None if math.isnan(rate[i, j]) else float(rate[i, j]) for j in order] for i in order],
            "games": [[float(games[i, j]) for j in order] for i in order],
        },
        "prompts": int((per.sum(axis=(1, 2)) > 0).sum()),
    }


def leaderboard(*, rounds: list[int] | None = None, category: str | None = None, n_boot: int = 200, seed: int = 0,
                prior: float = 0.1) -> dict:
    """The leaderboard (overall, or one category's) with per-category boards. JSON-serialisable."""
    comp = comparisons_read(rounds=rounds)
    names = dict(Checkpoint.objects.filter(id__in=comp.checkpoints).values_list("id", "name"))
    ck_names = [names[c] for c in comp.checkpoints]
    cats = np.array([c for _, c in comp.prompts], dtype=object)
    per = comp.per_prompt
    if category:
        per = per[cats == category] if len(cats) else per
    board = _board(per, ck_names, comp.checkpoints, n_boot=n_boot, seed=seed, prior=prior) if per.size else {
        "checkpoints": [], "win_matrix": {"names": [], "rates": [], "games": []}, "prompts": 0}
    categories = []
    if not category:
        for slug in sorted(set(cats.tolist())):
            sub = comp.per_prompt[cats == slug]
            b = _board(sub, ck_names, comp.checkpoints, n_boot=n_boot, seed=seed, prior=prior)
            categories.append({"category": slug or "(none)", "prompts": b["prompts"], "checkpoints": b["checkpoints"]})
    return {
        **board,
        "category": category or None,
        "rounds": rounds or [],
        "judgments": comp.judgments,
        "comparisons": float(comp.per_prompt.sum()),
        "tie_share": (comp.ties / comp.per_prompt.sum()) if comp.per_prompt.sum() else None,
        "bootstrap": n_boot,
        "categories": categories,
    }
