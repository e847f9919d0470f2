"""Tunable product settings of the annotation app: ``settings.VIDEODPO[name]`` when present, else the default here."""

from __future__ import annotations

from django.conf import settings

DEFAULTS: dict[str, object] = {
    "RESERVATION_TTL_S": 15 * 60,
    "MEDIA_URL_TTL_S": 60 * 60,
    # how many groups beyond the current one an annotator holds, so the next group's media can be prefetched
    "RESERVATION_LOOKAHEAD": 1,
    # a candidate counts as "played once" at this coverage (0..1) when Round.require_full_playback
    "FULL_PLAYBACK_MIN_COVERAGE": 0.9,
    # a pair whose majority holds less than this share of the votes on it is a disagreement (adaptive k, review)
    "PAIR_MIN_MAJORITY": 2 / 3,
    # automatic pause: gold accuracy below the threshold once the annotator has at least QC_MIN_GOLD gold judgments
    "QC_MIN_GOLD": 5,
    "QC_MIN_GOLD_ACCURACY": 0.6,
    # automatic pause: first-shown candidate wins more often than this in at least QC_MIN_JUDGMENTS_FOR_BIAS judgments
    "QC_MIN_JUDGMENTS_FOR_BIAS": 30,
    "QC_MAX_POSITION_BIAS": 0.9,
    # statistics pages read at most this many recent rows (so no page slows with the size of the database)
    "QC_SAMPLE_LIMIT": 50_000,
}


def conf(name: str):
    return getattr(settings, "VIDEODPO", {}).get(name, DEFAULTS[name])
