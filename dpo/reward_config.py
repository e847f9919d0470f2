"""The reward models' settings and data checks, without torch (the app validates a reward run with them before
anything is queued; ``dpo.reward`` trains the latent model, ``dpo.reward_vlm`` the video-language one)."""

from __future__ import annotations

import math
from dataclasses import dataclass

ASPECTS = ("overall", "vq", "mq", "ta")
ASPECT_NAMES = {"overall": "overall preference", "vq": "visual quality", "mq": "motion quality", "ta": "text alignment"}
MIN_PAIRS_PER_ASPECT = 8


class RewardDataError(ValueError):
    """Pairs that cannot train what was asked (the message names the aspect and the counts)."""


def aspect_shortfall(counts: dict[str, int], *, total: int) -> str:
    """The refusal for the first aspect with fewer than ``MIN_PAIRS_PER_ASPECT`` labelled pairs ("" when none)."""
    if total < MIN_PAIRS_PER_ASPECT:  # too few pairs at all: no choice of aspects helps
        return (f"only {total} usable preference pair{'s' if total != 1 else ''}: at least {MIN_PAIRS_PER_ASPECT} "
                f"are needed; judge more groups (or add rounds) first")
    enough = [a for a, n in counts.items() if n >= MIN_PAIRS_PER_ASPECT]
    for aspect, n in counts.items():
        if n < MIN_PAIRS_PER_ASPECT:
            return (f"aspect {aspect!r} ({ASPECT_NAMES[aspect]}): {n} of {total} pairs carry it, at least "
                    f"{MIN_PAIRS_PER_ASPECT} are needed; collect per-aspect judgments (a round setting) or train "
                    f"only the aspects the pairs have (aspects {','.join(enough) or 'overall'})")
    return ""


@dataclass
class LatentRewardConfig:
    aspects: tuple[str, ...] = ("overall", "vq", "mq", "ta")
    t: float = 0.75  # noise level of the features (0 = noise, 1 = data)
    noise_draws: int = 2  # features per candidate, one per noise draw (training picks one per step)
    hidden: int = 128
    steps: int = 400
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    holdout: float = 0.2  # share of prompts held out for the reported accuracy (0 = none)
    seed: int = 0

    def __post_init__(self) -> None:
        self.aspects = tuple(self.aspects)
        unknown = [a for a in self.aspects if a not in ASPECTS]
        if unknown or not self.aspects or len(set(self.aspects)) != len(self.aspects):
            raise ValueError(f"aspects must be distinct names among {ASPECTS}, got {list(self.aspects)}")
        if not 0.0 < self.t < 1.0:
            raise ValueError(f"t must be in (0, 1) (0 = noise, 1 = data), got {self.t}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        for name, top in (("noise_draws", 16), ("hidden", 4096), ("steps", 100_000), ("batch", 4096)):
            if not 1 <= getattr(self, name) <= top:
                raise ValueError(f"{name} must be from 1 to {top}, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")


VLM_ASPECTS = ("vq", "mq", "ta")  # the three columns of a VideoAlign CSV (it has no overall one)


@dataclass
class VLMRewardConfig:
    """A video language model (Qwen2-VL / Qwen2.5-VL) with LoRA adapters and one score per aspect (dpo.reward_vlm)."""

    aspects: tuple[str, ...] = VLM_ASPECTS
    frames: int = 8  # frames sampled evenly over each clip (made even: the vision tower's tubelets are 2 frames)
    min_pixels: int = 56 * 56  # per frame after resizing (sides multiples of 28), as the Qwen2-VL processors
    max_pixels: int = 448 * 448
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # the language model's attention
    steps: int = 200
    batch: int = 4  # pairs per step
    lr: float = 2e-4
    weight_decay: float = 0.0
    holdout: float = 0.2  # share of prompts held out for the reported accuracy (0 = none)
    seed: int = 0

    def __post_init__(self) -> None:
        self.aspects, self.lora_targets = tuple(self.aspects), tuple(self.lora_targets)
        unknown = [a for a in self.aspects if a not in VLM_ASPECTS]
        if unknown or not self.aspects or len(set(self.aspects)) != len(self.aspects):
            raise ValueError(f"aspects must be distinct names among {VLM_ASPECTS} (a VideoAlign CSV has no overall "
                             f"column), got {list(self.aspects)}")
        for name, top in (("frames", 256), ("lora_rank", 1024), ("lora_alpha", 4096), ("steps", 100_000),
                          ("batch", 256)):
            if not 1 <= getattr(self, name) <= top:
                raise ValueError(f"{name} must be from 1 to {top}, got {getattr(self, name)}")
        if not 28 * 28 <= self.min_pixels <= self.max_pixels <= 4096 * 4096:
            raise ValueError(f"need 784 <= min_pixels <= max_pixels <= 4096*4096, got {self.min_pixels}, "
                             f"{self.max_pixels}")
        if not self.lora_targets or not all(isinstance(t, str) and t for t in self.lora_targets):
            raise ValueError("lora_targets must name at least one module (e.g. q_proj)")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not (0 <= self.weight_decay < 1):
            raise ValueError(f"lr must be a positive number and weight_decay in [0, 1), got {self.lr}, "
                             f"{self.weight_decay}")
