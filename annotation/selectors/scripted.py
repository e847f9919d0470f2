"""Researcher-only read: the scripted annotator's scores (model.world detectors) of a round's candidates.

Never shown to annotators (the round page is behind ``researcher_required``); computed on request because it
downloads and decodes each video."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from annotation import storage
from annotation.models import Candidate


def candidate_frames(candidate: Candidate) -> np.ndarray:
    """(T, H, W, 3) uint8 of the candidate's MP4 (downloaded from storage, decoded by ``model.media``)."""
    from model.media import read_video_frames

    with tempfile.TemporaryDirectory() as tmp:
        path = storage.object_download(key=storage.key_from_uri(candidate.video_uri), path=Path(tmp) / "v.mp4")
        return read_video_frames(path)


def round_scripted_scores(*, round_id: int, limit: int = 48) -> list[dict]:
    """Per ready candidate (at most ``limit``): prompt, seed, TA / MQ / VQ and the attributes it missed; the scores
    are None for prompts outside the shapes grammar (not scorable)."""
    from model.world.detect import score_clip

    rows = []
    qs = (Candidate.objects.filter(group__round_id=round_id, status=Candidate.Status.READY)
          .select_related("group__prompt").order_by("group_id", "seed")[:limit])
    for c in qs:
        s = score_clip(c.group.prompt.text, candidate_frames(c))
        rows.append({"candidate_id": c.id, "prompt": c.group.prompt.text, "seed": c.seed, "scorable": s.scorable,
                     "ta": s.ta, "mq": s.mq, "vq": s.vq, "missed": [k for k, ok in s.checks.items() if not ok]})
    return rows
