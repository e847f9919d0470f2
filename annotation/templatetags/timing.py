"""``{% load timing %}``: durations and ETAs on live research pages (DPO runs, rounds)."""

from __future__ import annotations

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """``3 h 05 min``, ``4 min 20 s``, ``12 s``; empty for None."""
    if seconds is None:
        return ""
    s = int(round(float(seconds)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


@register.simple_tag
def run_timing(run) -> dict:
    """Elapsed time of a run (started -> finished, or now) and, while it runs, the ETA from its pace so far."""
    started, finished = getattr(run, "started_at", None), getattr(run, "finished_at", None)
    if started is None:
        return {"elapsed_s": None, "eta_s": None}
    elapsed = ((finished or timezone.now()) - started).total_seconds()
    step, total = getattr(run, "progress_step", 0) or 0, getattr(run, "progress_total", 0) or 0
    eta = elapsed / step * (total - step) if finished is None and step > 0 and total > step else None
    return {"elapsed_s": max(elapsed, 0.0), "eta_s": eta}


@register.filter
def groups_open(groups) -> int:
    """Groups still generating or waiting for judgments, from ``round_group_status_counts`` rows."""
    return sum(int(g["n"]) for g in groups if g["status"] in ("generating", "ready"))
