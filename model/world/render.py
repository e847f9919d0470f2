"""Render a shapes-world clip: ``render(spec_or_prompt, seed, size=64, frames=17) -> (T, H, W, 3) uint8``.

Pillow draws each frame at 4x and box-filters it down (anti-aliased edges, sub-pixel motion). Deterministic per
(prompt, seed): a prompt's unstated attributes (size, speed), the object positions and the bounce phase come from a
generator seeded by a hash of (spec, seed). Geometry is defined at 64 px and scaled to ``size`` (32 and 64 are the
supported sizes; any multiple of 16 works):

- sizes: small = half-extent 4 px, big = 7 px; shapes: circle (disc), square, triangle (apex up);
- speeds: slow = 1 px/frame, fast = 2 px/frame (16 / 32 px over a 17-frame clip); bouncing: |sin| hops of 12 px,
  two per clip; the ``count`` objects share shape, colour, size and motion, in separate lanes.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageDraw

from model.world.grammar import DIRECTIONS, RGB, SIZES, SPEEDS, WorldSpec, parse

HALF_EXTENT = {"small": 4.0, "big": 7.0}  # px at 64
SPEED_PX = {"slow": 1.0, "fast": 2.0}  # px per frame at 64
BOUNCE_PX = 12.0
SUPERSAMPLE = 4


def _rng(spec: WorldSpec, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{spec.key()}#{int(seed)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def trajectories(spec: WorldSpec, seed: int, frames: int = 17) -> tuple[np.ndarray, str, str]:
    """Object centres (count, T, 2) as (x, y) in 64-px units, and the size and speed drawn (stated or random)."""
    rng = _rng(spec, seed)
    size = spec.size or str(rng.choice(SIZES))
    speed = spec.speed or str(rng.choice(SPEEDS))
    r = HALF_EXTENT[size]
    n, t = spec.count, np.arange(frames, dtype=np.float64)
    lo, hi = r + 1, 64.0 - r - 1  # the centre's range along an axis
    lane = (hi - lo + 2 * r) / n  # lanes of equal width across the other axis, objects jittered inside them
    slack = max(0.0, lane - 2 * r - 2)
    lanes = lo - r + lane * (np.arange(n) + 0.5) + rng.uniform(-0.5, 0.5, n) * slack
    travel = SPEED_PX[speed] * (frames - 1) if spec.motion in DIRECTIONS else 0.0
    if spec.motion in ("left", "right"):
        start = rng.uniform(lo, hi - travel) if spec.motion == "right" else rng.uniform(lo + travel, hi)
        sign = 1.0 if spec.motion == "right" else -1.0
        x = start + sign * SPEED_PX[speed] * t
        xy = np.stack([np.broadcast_to(x, (n, frames)), np.broadcast_to(lanes[:, None], (n, frames))], -1)
    elif spec.motion in ("up", "down"):
        start = rng.uniform(lo, hi - travel) if spec.motion == "down" else rng.uniform(lo + travel, hi)
        sign = 1.0 if spec.motion == "down" else -1.0
        y = start + sign * SPEED_PX[speed] * t
        xy = np.stack([np.broadcast_to(lanes[:, None], (n, frames)), np.broadcast_to(y, (n, frames))], -1)
    else:
        base = rng.uniform(lo + (BOUNCE_PX if spec.motion == "bouncing" else 0.0), hi)
        y = np.full(frames, base)
        if spec.motion == "bouncing":
            phase = rng.uniform(0, np.pi)
            y = base - BOUNCE_PX * np.abs(np.sin(np.pi * t / ((frames - 1) / 2) + phase))
        xy = np.stack([np.broadcast_to(lanes[:, None], (n, frames)), np.broadcast_to(y, (n, frames))], -1)
    return np.ascontiguousarray(xy), size, speed


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def render(spec: WorldSpec | str, seed: int, *, size: int = 64, frames: int = 17) -> np.ndarray:
    """One clip (frames, size, size, 3) uint8. ``spec`` may be a prompt of the grammar (ValueError otherwise)."""
    if isinstance(spec, str):
        parsed = parse(spec)
        if parsed is None:
            raise ValueError(f"prompt outside the shapes grammar: {spec!r}")
        spec = parsed
    xy, size_name, _ = trajectories(spec, seed, frames)
    scale = size / 64.0 * SUPERSAMPLE
    r = HALF_EXTENT[size_name] * scale
    big = size * SUPERSAMPLE
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        image = Image.new("RGB", (big, big), RGB[spec.background])
        draw = ImageDraw.Draw(image)
        for k in range(spec.count):
            _draw(draw, spec.shape, xy[k, f, 0] * scale, xy[k, f, 1] * scale, r, RGB[spec.colour])
        out[f] = np.asarray(image.resize((size, size), Image.Resampling.BOX))
    return out
