"""Notifications when a round is ready for annotation (its generation finished) and when a round or a DPO run ends:
an e-mail through Django's backend (``EMAIL_BACKEND``) to ``VIDEODPO_NOTIFY_EMAILS`` (comma-separated), and a JSON
POST to ``VIDEODPO_NOTIFY_WEBHOOK_URL``. Sent after the transaction commits; a failing
mail server or webhook is logged, never breaks the transition.

Hooked on the rows the transitions write (a ``RoundEvent`` per round transition; the DPO run's status on save), so
every path that moves a round or a run (workers, pages, API, admin) notifies once."""

from __future__ import annotations

import json
import logging
import os
import urllib.request

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models.signals import post_save, pre_save

from annotation.models import DPORun, Round, RoundEvent

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_S = 5
ROUND_EVENTS = {
    Round.Status.ANNOTATING: "round.ready",  # from generating: every video is there
    Round.Status.DONE: "round.done",
    Round.Status.FAILED: "round.failed",
    Round.Status.CANCELLED: "round.cancelled",
}
RUN_TERMINAL = {DPORun.Status.DONE: "dpo_run.done", DPORun.Status.FAILED: "dpo_run.failed",
                DPORun.Status.CANCELLED: "dpo_run.cancelled"}


def _setting(name: str) -> str:
    return str(getattr(settings, name, None) or os.environ.get(name, "") or "")


def recipients() -> list[str]:
    return [e.strip() for e in _setting("VIDEODPO_NOTIFY_EMAILS").split(",") if e.strip()]


def notify(*, event: str, subject: str, body: str, payload: dict) -> None:
    """Send now (callers run this on commit)."""
    to = recipients()
    if to:
        try:
            send_mail(f"[Video-DPO] {subject}", body, None, to)
        except Exception:  # a mail server down must not break the loop
            log.exception("notification e-mail for %s failed", event)
    url = _setting("VIDEODPO_NOTIFY_WEBHOOK_URL")
    if url:
        data = json.dumps({"event": event, "subject": subject, **payload}).encode()
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT_S) as resp:
                resp.read(1024)
        except Exception:
            log.exception("notification webhook for %s failed", event)


def _on_round_event(sender, instance: RoundEvent, created: bool, raw: bool = False, **kwargs) -> None:
    if not created or raw:
        return
    event = ROUND_EVENTS.get(instance.to_status)
    if event is None or (event == "round.ready" and instance.from_status != Round.Status.GENERATING):
        return
    rnd = instance.round
    verb = {"round.ready": "is ready for annotation", "round.done": "is done", "round.failed": "failed",
            "round.cancelled": "was cancelled"}[event]
    subject = f"Round {rnd.name} {verb}"
    body = f"{subject}.\n\nStatus: {instance.to_status}. {instance.note}".strip()
    payload = {"round": {"id": rnd.pk, "name": rnd.name, "kind": rnd.kind, "status": instance.to_status}}
    transaction.on_commit(lambda: notify(event=event, subject=subject, body=body, payload=payload))


def _remember_run_status(sender, instance: DPORun, raw: bool = False, **kwargs) -> None:
    instance._status_before_save = (
        None if raw or instance.pk is None
        else DPORun.objects.filter(pk=instance.pk).values_list("status", flat=True).first()
    )


def _on_run_saved(sender, instance: DPORun, created: bool, raw: bool = False, **kwargs) -> None:
    before = getattr(instance, "_status_before_save", None)
    event = RUN_TERMINAL.get(instance.status)
    if raw or event is None or before == instance.status or before in RUN_TERMINAL:
        return
    subject = f"DPO run {instance.name} {instance.status}"
    body = f"{subject}.\n\nPairs: {instance.pairs_count}. Output checkpoint: {instance.output_checkpoint_id or '-'}."
    if instance.error:
        body += f"\nError: {instance.error[:2000]}"
    payload = {"dpo_run": {"id": instance.pk, "name": instance.name, "status": instance.status,
                           "output_checkpoint": instance.output_checkpoint_id, "error": instance.error[:2000]}}
    transaction.on_commit(lambda: notify(event=event, subject=subject, body=body, payload=payload))


def connect() -> None:
    post_save.connect(_on_round_event, sender=RoundEvent, dispatch_uid="videodpo-notify-round")
    pre_save.connect(_remember_run_status, sender=DPORun, dispatch_uid="videodpo-notify-run-pre")
    post_save.connect(_on_run_saved, sender=DPORun, dispatch_uid="videodpo-notify-run")
