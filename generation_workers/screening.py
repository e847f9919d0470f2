"""Automatic screening of a decoded candidate before people see it.

Flags (stored on ``Candidate.screening_flags``; the numbers on ``Candidate.screening_metrics``):
- ``black``: most frames are near-black (mean luma under ``black_luma`` and nothing in them brighter than
  ``black_peak_luma``: the 99th percentile of their luma after a 3x3 median filter; a small lit object on a black
  background is content, scattered hot pixels and dim noise are not);
- ``uniform``: most frames are near-uniform (per-frame luma standard deviation under ``uniform_std``);
- ``static``: almost no motion (mean absolute difference between consecutive frames under ``static_diff``);
- ``decode_failed`` / ``encode_failed``: the VAE output or the encoded file is unusable (NaN, wrong shape, an MP4 that
  does not read back with the expected frame count). Set by the worker through :func:`failure_flag`.

Thresholds are on the 0-255 scale, overridable by ``VIDEODPO["SCREENING"]`` (a dict of the fields below).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

BLACK = "black"
UNIFORM = "uniform"
STATIC = "static"
DECODE_FAILED = "decode_failed"
ENCODE_FAILED = "encode_failed"
FLAGS = (BLACK, UNIFORM, STATIC, DECODE_FAILED, ENCODE_FAILED)


@dataclass(frozen=True)
class ScreeningThresholds:
    black_luma: float = 16.0  # mean luma below this ...
    black_peak_luma: float = 20.0  # ... and a 99th percentile below this (3x3 median-filtered: nothing lit): near-black
    uniform_std: float = 4.0  # luma std below this: a near-uniform frame
    bad_frame_fraction: float = 0.5  # flag black/uniform when at least this fraction of frames is
    static_diff: float = 1.0  # mean |frame[t+1] - frame[t]| below this: no motion

    @classmethod
    def from_settings(cls) -> ScreeningThresholds:
        from annotation.conf import videodpo

        overrides = videodpo().screening
        names = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in overrides.items() if k in names})


def _luma(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB -> (T, H, W) float32 BT.601 luma."""
    rgb = frames.astype(np.float32)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def _peak_luma(luma: np.ndarray, max_side: int = 256) -> np.ndarray:
    """(T, H, W) luma -> (T,) the 99th percentile of each frame after a 3x3 median filter (on a copy subsampled to
    at most ``max_side`` pixels a side): a lit object of a few pixels across counts, scattered hot pixels and
    pixel noise do not."""
    from scipy.ndimage import median_filter

    step = max(1, -(-max(luma.shape[1:]) // max_side))
    small = luma[:, ::step, ::step]
    return np.percentile(median_filter(small, size=(1, 3, 3)).reshape(len(small), -1), 99, axis=1)


def screen_frames(frames: np.ndarray, thresholds: ScreeningThresholds | None = None) -> tuple[list[str], dict]:
    """Flags and metrics for uint8 frames (T, H, W, 3). Metrics are plain floats (JSON)."""
    th = thresholds or ScreeningThresholds()
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        return [DECODE_FAILED], {"error": f"bad frame shape {tuple(frames.shape)}"}
    luma = _luma(frames)  # (T, H, W)
    mean_luma = luma.mean(axis=(1, 2))  # (T,)
    std_luma = luma.std(axis=(1, 2))  # (T,)
    if len(frames) > 1:
        # motion on full RGB, mean over pixels, channels and frame pairs
        diffs = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))  # (T-1,)
        motion = float(diffs.mean())
        motion_max = float(diffs.max())
    else:
        motion = motion_max = 0.0
    peak_luma = _peak_luma(luma)  # (T,): the frame's brightest 1%, isolated hot pixels left out
    black_fraction = float(((mean_luma < th.black_luma) & (peak_luma < th.black_peak_luma)).mean())
    uniform_fraction = float((std_luma < th.uniform_std).mean())
    metrics = {
        "mean_luma": round(float(mean_luma.mean()), 4),
        "min_frame_luma": round(float(mean_luma.min()), 4),
        "max_frame_peak_luma": round(float(peak_luma.max()), 4),
        "mean_luma_std": round(float(std_luma.mean()), 4),
        "black_fraction": round(black_fraction, 4),
        "uniform_fraction": round(uniform_fraction, 4),
        "motion_mean_abs_diff": round(motion, 4),
        "motion_max_abs_diff": round(motion_max, 4),
        "thresholds": asdict(th),
    }
    flags = []
    if black_fraction >= th.bad_frame_fraction:
        flags.append(BLACK)
    if uniform_fraction >= th.bad_frame_fraction:
        flags.append(UNIFORM)
    if len(frames) > 1 and motion < th.static_diff:
        flags.append(STATIC)
    return flags, metrics


def failure_flag(stage: str) -> str:
    """The flag for a failure in ``stage`` (``"decode"`` or ``"encode"``)."""
    return DECODE_FAILED if stage == "decode" else ENCODE_FAILED
