"""The shapes world's prompt grammar, in English and Chinese: a prompt states attributes a detector can check.

    >>> spec = WorldSpec(shape="circle", colour="red", count=1, motion="right", background="black")
    >>> to_prompt(spec, "en")
    'a red circle moving right on a black background'
    >>> to_prompt(spec, "zh")
    '黑色背景上，一个红色的圆形向右移动'
    >>> parse("a red circle moving right on a black background") == spec
    True
    >>> parse("a cat on a sofa") is None   # outside the grammar: not scorable
    True

Attributes (``WorldSpec``): shape, colour, count (1-3), background and motion are always stated; size and speed are
optional (``None``: not stated, the renderer draws either). Speed is only stated for moving objects
(left/right/up/down). ``sample_spec`` draws a spec from a ``numpy`` generator; ``is_held_out`` is a fixed hash split
of the combinations (about a fifth) that training never sees.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, fields

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
BACKGROUNDS = ("black", "white", "gray")
COUNTS = (1, 2, 3)
SIZES = ("small", "big")
MOTIONS = ("left", "right", "up", "down", "still", "bouncing")
SPEEDS = ("slow", "fast")
DIRECTIONS = ("left", "right", "up", "down")
LANGUAGES = ("en", "zh")
# every attribute's values (size and speed may also be None: not stated)
VALUES = {"shape": SHAPES, "colour": COLOURS, "count": COUNTS, "motion": MOTIONS, "background": BACKGROUNDS,
          "size": SIZES, "speed": SPEEDS}

# RGB of each colour name (objects and backgrounds)
RGB = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40),
    "black": (0, 0, 0), "white": (245, 245, 245), "gray": (128, 128, 128),
}

_EN_COUNT = {1: "a", 2: "two", 3: "three"}
_EN_MOTION = {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
              "still": "staying still", "bouncing": "bouncing"}
_EN_SPEED = {"slow": "slowly", "fast": "quickly"}
_ZH_COUNT = {1: "一个", 2: "两个", 3: "三个"}
_ZH_COLOUR = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "black": "黑色", "white": "白色",
              "gray": "灰色"}
_ZH_SHAPE = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
_ZH_SIZE = {"small": "小", "big": "大"}
_ZH_MOTION = {"left": "向左移动", "right": "向右移动", "up": "向上移动", "down": "向下移动", "still": "静止不动",
              "bouncing": "上下弹跳"}
_ZH_SPEED = {"slow": "慢慢地", "fast": "快速地"}


@dataclass(frozen=True)
class WorldSpec:
    """What one prompt asks for. ``size``/``speed`` None: not stated."""

    shape: str
    colour: str
    count: int
    motion: str
    background: str
    size: str | None = None
    speed: str | None = None

    def __post_init__(self):
        for name in ("shape", "colour", "count", "motion", "background"):
            allowed = VALUES[name]
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES} or None, got {self.size!r}")
        if self.speed is not None and (self.speed not in SPEEDS or self.motion not in DIRECTIONS):
            raise ValueError(f"speed is one of {SPEEDS}, stated only for motions {DIRECTIONS}; got {self.speed!r}")

    def stated(self) -> dict[str, object]:
        """The attributes the prompt states (what text alignment checks)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def key(self) -> str:
        return "|".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


def to_prompt(spec: WorldSpec, lang: str = "en") -> str:
    """The canonical phrasing of ``spec`` in ``lang`` ("en" or "zh")."""
    if lang == "en":
        plural = spec.count > 1
        noun = spec.shape + ("s" if plural else "")
        words = [_EN_COUNT[spec.count]] + ([spec.size] if spec.size else []) + [spec.colour, noun]
        motion = _EN_MOTION[spec.motion]
        if spec.speed:
            motion += " " + _EN_SPEED[spec.speed]
        return f"{' '.join(words)} {motion} on a {spec.background} background"
    if lang == "zh":
        size = _ZH_SIZE[spec.size] if spec.size else ""
        speed = _ZH_SPEED[spec.speed] if spec.speed else ""
        return (f"{_ZH_COLOUR[spec.background]}背景上，{_ZH_COUNT[spec.count]}{_ZH_COLOUR[spec.colour]}的{size}"
                f"{_ZH_SHAPE[spec.shape]}{speed}{_ZH_MOTION[spec.motion]}")
    raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")


def _alt(options) -> str:
    return "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True))


def _inverse(d: dict) -> dict:
    return {v: k for k, v in d.items()}


_EN_RE = re.compile(
    rf"^(?P<count>{_alt(_EN_COUNT.values())}) (?:(?P<size>{_alt(SIZES)}) )?(?P<colour>{_alt(COLOURS)}) "
    rf"(?P<shape>{_alt(SHAPES)})s? (?P<motion>{_alt(_EN_MOTION.values())})(?: (?P<speed>{_alt(_EN_SPEED.values())}))? "
    rf"on an? (?P<background>{_alt(BACKGROUNDS)}) background$"
)
_ZH_RE = re.compile(
    rf"^(?P<background>{_alt(_ZH_COLOUR.values())})背景上，(?P<count>{_alt(_ZH_COUNT.values())})"
    rf"(?P<colour>{_alt(_ZH_COLOUR.values())})的(?P<size>{_alt(_ZH_SIZE.values())})?(?P<shape>{_alt(_ZH_SHAPE.values())})"
    rf"(?P<speed>{_alt(_ZH_SPEED.values())})?(?P<motion>{_alt(_ZH_MOTION.values())})$"
)


def parse(text: str) -> WorldSpec | None:
    """The spec a prompt of the grammar states, or None for anything outside it (case and spacing of English
    prompts, a trailing full stop and a suffix after a full stop or comma, e.g. the positive magic, are tolerated)."""
    text = " ".join(text.strip().split())
    en = re.match(r"^(.*?)(?:[.。]|$)", text.lower()).group(1).strip()
    m = _EN_RE.match(en)
    if m:
        g = m.groupdict()
        count = _inverse(_EN_COUNT)[g["count"]]
        plural_ok = (count > 1) == en.split(" ")[1 + (g["size"] is not None) + 1].endswith("s")
        if not plural_ok:
            return None
        return _build(shape=g["shape"], colour=g["colour"], count=count, motion=_inverse(_EN_MOTION)[g["motion"]],
                      background=g["background"], size=g["size"],
                      speed=_inverse(_EN_SPEED)[g["speed"]] if g["speed"] else None)
    zh = re.match(r"^(.*?)(?:[。.]|$)", text).group(1).strip()
    m = _ZH_RE.match(zh)
    if m:
        g = m.groupdict()
        return _build(shape=_inverse(_ZH_SHAPE)[g["shape"]], colour=_inverse(_ZH_COLOUR)[g["colour"]],
                      count=_inverse(_ZH_COUNT)[g["count"]], motion=_inverse(_ZH_MOTION)[g["motion"]],
                      background=_inverse(_ZH_COLOUR)[g["background"]],
                      size=_inverse(_ZH_SIZE)[g["size"]] if g["size"] else None,
                      speed=_inverse(_ZH_SPEED)[g["speed"]] if g["speed"] else None)
    return None


def _build(**kw) -> WorldSpec | None:
    try:
        return WorldSpec(**kw)
    except ValueError:  # e.g. a background colour word used for an object, or a speed on "still"
        return None


def sample_spec(rng: np.random.Generator) -> WorldSpec:
    """A random spec: every attribute uniform; size stated half of the time, speed half of the time it can be."""
    motion = str(rng.choice(MOTIONS))
    size = str(rng.choice(SIZES)) if rng.random() < 0.5 else None
    speed = str(rng.choice(SPEEDS)) if motion in DIRECTIONS and rng.random() < 0.5 else None
    return WorldSpec(shape=str(rng.choice(SHAPES)), colour=str(rng.choice(COLOURS)), count=int(rng.choice(COUNTS)),
                     motion=motion, background=str(rng.choice(BACKGROUNDS)), size=size, speed=speed)


def is_held_out(spec: WorldSpec) -> bool:
    """A fixed ~20% of the (shape, colour, count, motion, background) combinations: never in training data."""
    core = f"{spec.shape}|{spec.colour}|{spec.count}|{spec.motion}|{spec.background}"
    return hashlib.sha256(core.encode()).digest()[0] < 52


def sample_prompts(n: int, seed: int, *, held_out: bool | None = False, lang: str | None = None) -> list[str]:
    """``n`` distinct prompts of the grammar (``held_out``: only held-out combos, False: only training ones, None:
    any; ``lang``: "en", "zh" or None for alternating), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    for _ in range(n * 1000):
        spec = sample_spec(rng)
        if held_out is not None and is_held_out(spec) != held_out:
            continue
        language = lang or LANGUAGES[len(out) % 2]
        text = to_prompt(spec, language)
        if text not in seen:
            seen.add(text)
            out.append(text)
        if len(out) == n:
            return out
    raise ValueError(f"could not draw {n} distinct prompts")


def corpus() -> list[str]:
    """Every word and phrase of the grammar in both languages (tokenizer training text)."""
    lines = []
    rng = np.random.default_rng(0)
    for _ in range(400):
        spec = sample_spec(rng)
        lines += [to_prompt(spec, "en"), to_prompt(spec, "zh")]
    return lines
