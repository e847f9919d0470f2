"""The round state machine: the one place a round's status changes (the other services call it).

    draft -> generating -> annotating -> training -> done
    (generating | annotating | training) -> failed ; any non-final -> cancelled ; failed -> generating (relaunch)
    annotating -> generating (more prompts) ; training -> annotating (a failed/cancelled DPO run)

Every transition is recorded (RoundEvent: from, to, actor, time, note); an illegal one raises ValidationError."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.models import Round, RoundEvent

ERR_ILLEGAL_TRANSITION = "Round {round!r} cannot go from {from_status} to {to_status} (allowed: {allowed})."

TRANSITIONS: dict[str, set[str]] = {
    Round.Status.DRAFT: {Round.Status.GENERATING, Round.Status.CANCELLED},
    Round.Status.GENERATING: {Round.Status.ANNOTATING, Round.Status.FAILED, Round.Status.CANCELLED},
    Round.Status.ANNOTATING: {Round.Status.TRAINING, Round.Status.DONE, Round.Status.GENERATING, Round.Status.CANCELLED},
    Round.Status.TRAINING: {Round.Status.DONE, Round.Status.ANNOTATING, Round.Status.FAILED, Round.Status.CANCELLED},
    Round.Status.FAILED: {Round.Status.GENERATING, Round.Status.CANCELLED},
    Round.Status.DONE: set(),
    Round.Status.CANCELLED: set(),
}


def round_transition_apply(*, round: Round, to_status: str, actor=None, note: str = "") -> bool:
    """Apply a guarded transition to a row the caller has locked; False when already there (idempotent)."""
    if round.status == to_status:
        return False
    allowed = TRANSITIONS.get(round.status, set())
    if to_status not in allowed:
        raise ValidationError(ERR_ILLEGAL_TRANSITION.format(
            round=round.name, from_status=round.status, to_status=to_status,
            allowed=", ".join(sorted(allowed)) or "none (final)"))
    RoundEvent.objects.create(round=round, from_status=round.status, to_status=to_status, actor=actor, note=note)
    now = timezone.now()
    round.status = to_status
    fields = ["status", "updated_at"]
    if to_status == Round.Status.GENERATING and round.started_at is None:
        round.started_at = now
        fields.append("started_at")
    if to_status in (Round.Status.DONE, Round.Status.FAILED, Round.Status.CANCELLED):
        round.finished_at = now
        fields.append("finished_at")
    round.save(update_fields=fields)
    return True


@transaction.atomic
def round_transition(*, round_id: int, to_status: str, actor=None, note: str = "") -> Round:
    round = Round.objects.select_for_update().get(id=round_id)
    round_transition_apply(round=round, to_status=to_status, actor=actor, note=note)
    return round
