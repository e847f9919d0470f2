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


# -- a reviewer's hand on the pause (the QC page): who and when are kept in the profile -----------------------------
ERR_NOT_AN_ANNOTATOR = "There is no annotator {value}."
ERR_REASON_TOO_LONG = "The reason is at most {n} characters."
REASON_MAX = 500
MANUAL_PAUSE = "paused by {actor} on the QC page{colon}{reason}"


def _annotator(annotator_id: int):
    from django.contrib.auth import get_user_model

    from annotation.errors import ApplicationError
    from annotation.permissions import ANNOTATOR

    user = get_user_model().objects.filter(pk=annotator_id, groups__name=ANNOTATOR).first()
    if user is None:
        raise ApplicationError(ERR_NOT_AN_ANNOTATOR.format(value=annotator_id), status=404)
    return user


@transaction.atomic
def annotator_pause_by_reviewer(*, annotator_id: int, actor, reason: str = "") -> AnnotatorProfile:
    """Pause an annotator by hand; the reason records who (``actor``) and ``paused_at`` when."""
    from annotation.errors import ApplicationError

    reason = (reason or "").replace("\x00", "").strip()
    if len(reason) > REASON_MAX:
        raise ApplicationError(ERR_REASON_TOO_LONG.format(n=REASON_MAX))
    user = _annotator(annotator_id)
    text = MANUAL_PAUSE.format(actor=actor.get_username(), colon=": " if reason else "", reason=reason)
    return annotator_pause(annotator=user, reason=text)


@transaction.atomic
def annotator_unpause_by_reviewer(*, annotator_id: int, actor) -> AnnotatorProfile:
    """Let a paused annotator judge again. The automatic check still runs after each of their judgments: figures
    still below the thresholds pause them again."""
    import logging

    user = _annotator(annotator_id)
    logging.getLogger(__name__).info("annotator %s unpaused by %s", user.pk, actor.get_username())
    return annotator_unpause(annotator=user)
