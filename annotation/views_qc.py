"""The QC page's actions (reviewers and researchers): pause or unpause an annotator. POST, CSRF-protected,
post-and-redirect back to the QC page of the round it came from; refusals are 4xx pages."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation.errors import ApplicationError, html_errors, is_int
from annotation.permissions import reviewer_required
from annotation.services.quality import annotator_pause_by_reviewer, annotator_unpause_by_reviewer

ERR_BAD_ACTION = "Choose pause or unpause (got {value!r})."


@reviewer_required
@require_POST
@html_errors
def qc_annotator_pause(request: HttpRequest, annotator_id: int) -> HttpResponse:
    action = request.POST.get("action", "")
    if action == "pause":
        annotator_pause_by_reviewer(annotator_id=annotator_id, actor=request.user,
                                    reason=request.POST.get("reason", ""))
        messages.success(request, "Annotator paused: they get no new groups until unpaused.")
    elif action == "unpause":
        annotator_unpause_by_reviewer(annotator_id=annotator_id, actor=request.user)
        messages.success(request, "Annotator unpaused (the automatic check still applies to their next judgments).")
    else:
        raise ApplicationError(ERR_BAD_ACTION.format(value=action[:40]))
    round_id = request.POST.get("round", "")
    return redirect(reverse("qc") + (f"?round={round_id}" if is_int(round_id) else ""))
