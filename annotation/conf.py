"""The product settings as one typed, frozen object, read by the web side and the workers alike.

Every default lives in ``webapp/settings/base.py`` (``VIDEODPO = {...}``, each overridable from the environment);
this module only types and checks them. A key missing from ``settings.VIDEODPO`` or one nobody reads is a
configuration error at first use, naming the key. Tests and benchmarks change a value by assigning a new dict
(``settings.VIDEODPO = {**settings.VIDEODPO, "X": ...}``); the object is rebuilt when the dict changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class VideoDPOSettings:
    """``settings.VIDEODPO``, one field per key (the key is the field name in upper case)."""

    # annotation
    reservation_ttl_s: int  # an abandoned reservation returns to the queue after this
    reservation_lookahead: int  # groups held beyond the current one (their media is prefetched)
    max_prompt_chars: int
    media_url_ttl_s: int  # lifetime of media / download URLs
    full_playback_min_coverage: float  # "played once" at this coverage (0..1) when a round requires full playback
    pair_min_majority: float  # a pair whose majority holds less than this share of its votes is a disagreement
    qc_min_gold: int  # gold judgments needed before the gold-accuracy pause applies
    qc_min_gold_accuracy: float
    qc_min_judgments_for_bias: int  # judgments needed before the position-bias pause applies
    qc_max_position_bias: float
    qc_sample_limit: int  # statistics pages read at most this many recent rows
    # generation workers
    model_cache_dir: Path  # local copies of s3:// model roots
    device: str  # auto | cuda | cpu
    split_queues: bool  # text encoding / sampling / VAE decoding on queues text / gpu / vae
    batch_seeds: bool  # the K seeds of a prompt in one sampling call
    stale_running_s: float  # a running candidate without a heartbeat for this long belongs to a dead worker
    heartbeat_s: float
    progress_interval_s: float
    positive_suffix: bool  # append the preset's positive suffix to prompts (the official pipeline's pos_magic)
    x264_preset: str
    x264_crf: int
    pipeline_factory: str  # dotted path of factory(root, preset=, device=); empty: StepVideoPipeline.from_pretrained
    gpus_per_job: int  # GPUs one worker owns; > 1: the DiT runs sequence-parallel across them (model.parallel)
    screening: Mapping[str, float]  # overrides of generation_workers.screening.ScreeningThresholds fields
    # DPO runs
    runs_dir: Path  # run folders (manifest, checkpoints, final model root)
    reward_vlm_root: str  # the VLM folder the new reward-run form offers (empty: none)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> VideoDPOSettings:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in values if k.lower() not in names)
        missing = sorted(n.upper() for n in names if n.upper() not in values)
        if unknown or missing:
            raise ImproperlyConfigured(
                "settings.VIDEODPO: " + "; ".join(
                    ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
                    + ([f"missing key(s) {', '.join(missing)} (defaults are in webapp/settings/base.py)"] if missing else [])
                ))
        out: dict[str, Any] = {}
        for name, f in names.items():
            value = values[name.upper()]
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            try:
                if kind == "bool":
                    out[name] = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
                elif kind in ("int", "float", "str"):
                    out[name] = {"int": int, "float": float, "str": str}[kind](value if value is not None else "")
                elif kind == "Path":
                    out[name] = Path(value)
                else:
                    out[name] = MappingProxyType({str(k): float(v) for k, v in dict(value or {}).items()})
            except (TypeError, ValueError) as exc:
                raise ImproperlyConfigured(f"settings.VIDEODPO[{name.upper()!r}] = {value!r}: {exc}") from exc
        return cls(**out)


_cache: tuple[object, VideoDPOSettings] | None = None


def videodpo() -> VideoDPOSettings:
    """The settings object (rebuilt only when ``settings.VIDEODPO`` is a new dict)."""
    global _cache
    raw = settings.VIDEODPO
    if _cache is None or _cache[0] is not raw:
        _cache = (raw, VideoDPOSettings.from_mapping(raw))
    return _cache[1]


def conf(name: str):
    """One value by its ``VIDEODPO`` key (``conf("QC_MIN_GOLD")``): a field of :func:`videodpo`."""
    return getattr(videodpo(), name.lower())
