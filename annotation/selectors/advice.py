"""What the QC page and the leaderboard tell a reviewer to be careful about: which round has data to show, and when a
ranking rests on too little (few prompts, mostly ties) to act on."""

from __future__ import annotations

from annotation.models import Round

MIN_PROMPTS = 10  # fewer prompts: a bootstrap over prompts cannot give trustworthy intervals
MAX_TIE_SHARE = 0.5  # more ties than this: the ranking rests on a few decisive votes
WARN_FEW_PROMPTS = ("Only {n} prompt{s}: the 95% intervals come from a bootstrap over prompts and are not reliable with "
                    "fewer than {min}. Judge more prompts before acting on this ranking.")
WARN_TIES = ("{pct:.0f}% of the comparisons are ties: annotators see little difference, and the strengths rest on a "
             "few decisive votes.")


def latest_round_with_judgments() -> Round | None:
    """The newest round that has at least one judgment (the QC page's default)."""
    return Round.objects.filter(groups__judgments__isnull=False).order_by("-created_at").distinct().first()


def leaderboard_warnings(board: dict) -> list[str]:
    warnings = []
    prompts = int(board.get("prompts") or 0)
    if board.get("checkpoints") and prompts < MIN_PROMPTS:
        warnings.append(WARN_FEW_PROMPTS.format(n=prompts, s="" if prompts == 1 else "s", min=MIN_PROMPTS))
    tie = board.get("tie_share")
    if board.get("checkpoints") and tie is not None and tie > MAX_TIE_SHARE:
        warnings.append(WARN_TIES.format(pct=100 * tie))
    return warnings
