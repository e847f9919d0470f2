"""Detectors on decoded uint8 frames and the per-clip scores the scripted annotators judge by.

    obs = observe(frames)                  # (T, H, W, 3) uint8 -> what is in the clip (no prompt needed)
    s = score_clip(prompt, frames)         # ClipScores: text alignment, motion quality, visual quality in [0, 1]

How (``scipy.ndimage`` for connected components; geometry in 64-px units whatever the clip size):

- background: the median colour of the border pixels, named by the nearest palette colour;
- foreground: pixels farther than ``FG_DIST`` from it; per frame, connected components of at least ``MIN_AREA`` px;
- colour: the mean of the foreground's core pixels, nearest object colour; count: the most common number of
  components over the frames; size: the median sqrt(bounding-box area) (small ~8 px, big ~14 px);
  shape: the median fill ratio area / bounding box (triangle ~0.5, disc ~0.79, square ~1);
- motion: the track of the foreground centroid: net displacement of a line fit (still < 4 px; else the dominant axis
  and its sign), bouncing = a vertical range of > 6 px with little net motion; speed: slow < 24 px < fast.

Text alignment (TA) is the fraction of the prompt's stated attributes the clip satisfies (``ClipScores.checks``
has each one). Motion quality (MQ) averages track smoothness (second differences of the centroid), steady
foreground area (no flicker) and shape integrity (frames with the clip's usual component count and no
frame-filling blob). Visual quality (VQ)
averages background uniformity (its pixels' spread) and crispness (share of pixels near a palette colour).
A prompt outside the grammar is not scorable: ``ClipScores.scorable`` False and every score None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from model.world.grammar import BACKGROUNDS, COLOURS, DIRECTIONS, RGB, WorldSpec, parse

FG_DIST = 60.0
CORE_DIST = 110.0
MIN_AREA = 4  # px at 64
STILL_PX, BOUNCE_RANGE_PX, FAST_PX, SIZE_PX = 4.0, 6.0, 24.0, 11.0
FILL_TRIANGLE_CIRCLE, FILL_CIRCLE_SQUARE = 0.65, 0.89
ACC_TOLERANCE_PX = 1.5  # mean |second difference| of the track a clean bounce reaches
_PALETTE = np.array([RGB[c] for c in (*COLOURS, *BACKGROUNDS)], dtype=np.float32)


@dataclass(frozen=True)
class Observation:
    """What the detectors see in a clip. Fields are None when there is nothing to measure (no foreground)."""

    background: str
    colour: str | None
    count: int
    size: str | None
    shape: str | None
    motion: str | None
    speed: str | None
    track: np.ndarray = field(repr=False)  # (T, 2) centroid (x, y) in 64-px units, NaN where a frame is empty
    components: np.ndarray = field(repr=False)  # (T,) components per frame
    area: np.ndarray = field(repr=False)  # (T,) foreground pixels per frame (64-px units)
    background_std: float = 0.0
    crisp: float = 1.0


@dataclass(frozen=True)
class ClipScores:
    """Per-clip scores in [0, 1] (None when not scorable) and the per-attribute checks behind ``ta``."""

    scorable: bool
    ta: float | None
    mq: float | None
    vq: float | None
    checks: dict[str, bool] = field(default_factory=dict)
    observation: Observation | None = None

    def as_dict(self) -> dict:
        return {"scorable": self.scorable, "ta": self.ta, "mq": self.mq, "vq": self.vq, "checks": dict(self.checks)}


def _nearest(rgb: np.ndarray, names: tuple[str, ...]) -> str:
    table = np.array([RGB[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((table - rgb) ** 2).sum(-1)))]


def observe(frames: np.ndarray) -> Observation:
    """frames (T, H, W, 3) uint8 -> :class:`Observation`."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    T, H, W, _ = frames.shape
    px = 64.0 / W  # 64-px units per pixel
    x = frames.astype(np.float32)
    border = np.concatenate([x[:, :2].reshape(-1, 3), x[:, -2:].reshape(-1, 3), x[:, :, :2].reshape(-1, 3),
                             x[:, :, -2:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    dist = np.sqrt(((x - bg_rgb) ** 2).sum(-1))  # (T, H, W)
    fg = dist > FG_DIST
    min_area = max(1, int(round(MIN_AREA / px**2)))
    counts, areas, fills, sides = np.zeros(T, int), np.zeros(T), [], []
    track = np.full((T, 2), np.nan)
    for f in range(T):
        labels, n = ndimage.label(fg[f])
        if n == 0:
            continue
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        keep = [i + 1 for i in range(n) if sizes[i] >= min_area]
        counts[f] = len(keep)
        mask = np.isin(labels, keep)
        areas[f] = mask.sum() * px**2
        if not keep:
            continue
        ys, xs = np.nonzero(mask)
        track[f] = (xs.mean() + 0.5) * px, (ys.mean() + 0.5) * px
        for sl, lab in zip(ndimage.find_objects(labels), range(1, n + 1), strict=True):
            if lab not in keep:
                continue
            h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            fills.append(sizes[lab - 1] / (h * w))
            sides.append(np.sqrt(h * w) * px)
    core = dist > CORE_DIST
    colour = _nearest(x[core].mean(0), COLOURS) if core.sum() >= min_area else None
    nonzero = counts[counts > 0]
    count = int(np.bincount(nonzero).argmax()) if len(nonzero) else 0
    fill = float(np.median(fills)) if fills else None
    shape = None if fill is None else "triangle" if fill < FILL_TRIANGLE_CIRCLE else (
        "circle" if fill < FILL_CIRCLE_SQUARE else "square")
    size = None if not sides else ("small" if np.median(sides) < SIZE_PX else "big")
    motion = speed = None
    ok = ~np.isnan(track[:, 0])
    if ok.sum() >= max(3, T // 2):
        t = np.arange(T)[ok]
        slope = np.polyfit(t, track[ok], 1)[0]  # (2,) px per frame
        dx, dy = slope * (T - 1)
        y_range = np.ptp(track[ok, 1])
        if y_range > BOUNCE_RANGE_PX and abs(dy) < STILL_PX and abs(dx) < STILL_PX:
            motion = "bouncing"
        elif np.hypot(dx, dy) < STILL_PX:
            motion = "still"
        else:
            motion = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
            speed = "fast" if np.hypot(dx, dy) > FAST_PX else "slow"
    bg_pixels = x[~ndimage.binary_dilation(fg, iterations=1, structure=np.ones((1, 3, 3)))]
    background_std = float(np.sqrt(((bg_pixels - bg_rgb) ** 2).sum(-1).mean())) if len(bg_pixels) else 255.0
    near = np.sqrt(((x.reshape(-1, 1, 3) - _PALETTE) ** 2).sum(-1)).min(1) < 40.0
    return Observation(background=background, colour=colour, count=count, size=size, shape=shape, motion=motion,
                       speed=speed, track=track, components=counts, area=areas, background_std=background_std,
                       crisp=float(near.mean()))


def motion_quality(obs: Observation) -> float:
    """Smooth track, steady foreground area, stable component count; 0 for an empty clip."""
    ok = ~np.isnan(obs.track[:, 0])
    if ok.sum() < 3 or obs.count == 0:
        return 0.0
    acc = np.abs(np.diff(obs.track[ok], n=2, axis=0)).sum(-1).mean()
    smooth = float(np.exp(-max(0.0, acc - ACC_TOLERANCE_PX) / 1.5))  # a bouncing hop's curvature is allowed
    area = obs.area  # every frame: a vanishing object is flicker
    steady = float(np.exp(-(area.std() / max(area.mean(), 1e-6)) / 0.2))
    # the clip's usual component count, each frame, and objects, not a frame-filling blob (noise)
    integrity = float(((obs.components == obs.count) & (obs.area < 0.5 * 64 * 64)).mean())
    return (smooth + steady + integrity) / 3.0


def visual_quality(obs: Observation) -> float:
    """Uniform background and crisp colours."""
    return (float(np.exp(-obs.background_std / 10.0)) + obs.crisp) / 2.0


def check(spec: WorldSpec, obs: Observation) -> dict[str, bool]:
    """Each stated attribute of ``spec``: satisfied by the clip or not."""
    out = {}
    for name, want in spec.stated().items():
        got = getattr(obs, name)
        if name == "speed" and spec.motion not in DIRECTIONS:
            continue
        out[name] = got == want
    return out


def score_clip(prompt: str | WorldSpec, frames: np.ndarray) -> ClipScores:
    """Text alignment, motion and visual quality of one clip for ``prompt`` (not scorable outside the grammar)."""
    spec = parse(prompt) if isinstance(prompt, str) else prompt
    if spec is None:
        return ClipScores(scorable=False, ta=None, mq=None, vq=None)
    obs = observe(frames)
    checks = check(spec, obs)
    return ClipScores(scorable=True, ta=sum(checks.values()) / len(checks), mq=motion_quality(obs),
                      vq=visual_quality(obs), checks=checks, observation=obs)


def score_batch(prompts: list[str] | str, frames) -> list[ClipScores]:
    """Score a batch (B, T, H, W, 3) (numpy or torch uint8) against one prompt or one prompt per clip."""
    frames = np.asarray(frames)
    prompts = [prompts] * len(frames) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(frames):
        raise ValueError(f"{len(prompts)} prompts for {len(frames)} clips")
    return [score_clip(p, f) for p, f in zip(prompts, frames, strict=True)]
