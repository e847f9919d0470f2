"""The domain of the feedback loop: prompts, checkpoints, rounds, candidates, assignments, judgments, pairs, exports,
DPO runs. Writes in ``services``, reads in ``selectors``; no torch import here."""
