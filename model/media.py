"""Decoded video frames, for the code that reads generated clips back (scripted annotators, the VLM reward model).

ffmpeg comes from the imageio-ffmpeg wheel's reader (which finds Debian's ``ffmpeg`` on ``PATH`` or ships its own);
no Django and no worker code here, so the app, the trainer and the benchmarks share one decoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class VideoReadError(ValueError):
    """A file that is not a readable video (the message names it)."""


def read_video_frames(path: str | Path, frames: int | None = None) -> np.ndarray:
    """A video file's frames as uint8 (T, H, W, 3) RGB: every frame, or at most ``frames`` of them spread evenly
    over the video (first and last kept; the decoder streams and keeps only those, so a long video's memory stays
    ``frames`` frames)."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video not found: {path}")
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    try:
        keep = None
        if frames is not None:
            total, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
            if total > frames:
                keep = set(np.linspace(0, total - 1, frames).round().astype(int).tolist())
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        width, height = next(reader)["size"]
        out = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for i, f in enumerate(reader)
               if keep is None or i in keep]
    except (OSError, RuntimeError, StopIteration) as exc:
        raise VideoReadError(f"{path} is not a readable video: {exc}") from exc
    if not out:
        raise VideoReadError(f"{path} has no frames")
    return np.stack(out)
