"""Generate with a model root and score the clips with the detectors: the text-alignment figure of a checkpoint.

    from model.world.evaluate import evaluate_root
    evaluate_root(root, prompts, seeds=[0, 1])   # {"ta": ..., "mq": ..., "vq": ..., "n": ..., "per_attribute": {...}}
"""

from __future__ import annotations

import numpy as np

from model.world.detect import ClipScores, score_batch


def summarize(scores: list[ClipScores]) -> dict:
    """Mean TA / MQ / VQ over the scorable clips and the share of each attribute satisfied."""
    ok = [s for s in scores if s.scorable]
    per: dict[str, list[bool]] = {}
    for s in ok:
        for name, hit in s.checks.items():
            per.setdefault(name, []).append(hit)
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    return {"ta": mean([s.ta for s in ok]), "mq": mean([s.mq for s in ok]), "vq": mean([s.vq for s in ok]),
            "n": len(ok), "not_scorable": len(scores) - len(ok),
            "per_attribute": {k: round(float(np.mean(v)), 3) for k, v in sorted(per.items())}}


def generate_and_score(pipe, prompts: list[str], seeds: list[int], **sample_kw) -> list[ClipScores]:
    """Every prompt x every seed with ``pipe`` (a StepVideoPipeline), scored; prompt-major order."""
    out = []
    for prompt in prompts:
        frames = pipe.generate([prompt], seeds, **sample_kw).frames.numpy()
        out += score_batch(prompt, frames)
    return out


def evaluate_root(root, prompts: list[str], seeds: list[int], **sample_kw) -> dict:
    from model.pipeline import StepVideoPipeline

    pipe = StepVideoPipeline.from_pretrained(root, preset="tiny", device="cpu")
    return summarize(generate_and_score(pipe, prompts, seeds, **sample_kw))
