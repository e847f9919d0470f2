"""Decoded video frames, for the code that reads generated clips back (scripted annotators, the VLM reward model).

ffmpeg comes from the imageio-ffmpeg wheel's reader (which finds Debian's ``ffmpeg`` on ``PATH`` or ships its own);
no Django and no worker code here, so the app, the trainer and the benchmarks share one decoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class VideoReadError(ValueError):
    """A file that is not a readable video (the message names it)."""


def read_video_frames(path: str | Path) -> np.ndarray:
    """Every frame of a video file as uint8 (T, H, W, 3) RGB."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video not found: {path}")
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        width, height = next(reader)["size"]
        frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]
    except (OSError, RuntimeError, StopIteration) as exc:
        raise VideoReadError(f"{path} is not a readable video: {exc}") from exc
    if not frames:
        raise VideoReadError(f"{path} has no frames")
    return np.stack(frames)
