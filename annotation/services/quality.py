"""Automatic pause of annotators whose quality falls below the configured thresholds (annotation.conf)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from annotation.conf import conf
from annotation.models import AnnotatorProfile
from annotation.selectors.stats import annotator_gold_accuracy, annotator_stats
from annotation.services.accounts import annotator_profile_ensure

PAUSE_GOLD = "gold accuracy {accuracy:.0%} over {n} gold groups is below {threshold:.0%}"
PAUSE_POSITION = "the first-shown video won {bias:.0%} of {n} judgments (above {threshold:.0%})"


def annotator_pause_reason(*, annotator_id: int) -> str:
    """Why the annotator should be paused now ('' when the figures are fine)."""
    gold_n, accuracy = annotator_gold_accuracy(annotator_id=annotator_id)
    if gold_n >= conf("QC_MIN_GOLD") and accuracy is not None and accuracy < conf("QC_MIN_GOLD_ACCURACY"):
        return PAUSE_GOLD.format(accuracy=accuracy, n=gold_n, threshold=conf("QC_MIN_GOLD_ACCURACY"))
    stats = annotator_stats(annotator_id=annotator_id, with_peers=False)
    if (
        stats.position_n >= conf("QC_MIN_JUDGMENTS_FOR_BIAS")
        and stats.position_bias is not None
        and stats.position_bias > conf("QC_MAX_POSITION_BIAS")
    ):
        return PAUSE_POSITION.format(bias=stats.position_bias, n=stats.position_n, threshold=conf("QC_MAX_POSITION_BIAS"))
    return ""


@transaction.atomic
def annotator_quality_check(*, annotator) -> bool:
    """Pause the annotator when below a threshold; returns whether they are paused now."""
    profile = annotator_profile_ensure(user=annotator)
    if profile.is_paused:
        return True
    reason = annotator_pause_reason(annotator_id=annotator.pk)
    if reason:
        annotator_pause(annotator=annotator, reason=reason)
        return True
    return False


@transaction.atomic
def annotator_pause(*, annotator, reason: str) -> AnnotatorProfile:
    profile = annotator_profile_ensure(user=annotator)
    profile.is_paused, profile.paused_reason, profile.paused_at = True, reason, timezone.now()
    profile.save(update_fields=["is_paused", "paused_reason", "paused_at"])
    return profile


@transaction.atomic
def annotator_unpause(*, annotator) -> AnnotatorProfile:
    profile = annotator_profile_ensure(user=annotator)
    profile.is_paused, profile.paused_reason, profile.paused_at = False, "", None
    profile.save(update_fields=["is_paused", "paused_reason", "paused_at"])
    return profile
