"""Live help for the research forms: the round form's "N prompts x K seeds = M videos" preview with an estimated
time from the workers' recent throughput (htmx partial, updated as the filter changes)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotation.permissions import researcher_required
from annotation.selectors.round_preview import round_preview
from annotation.services.rounds import prompts_select


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def prompt_ids_for_form(form) -> list[int]:
    """The prompts a round form's filter selects (the same call the round form makes)."""
    return prompts_select(category=form.get("category", ""), search=form.get("search", ""),
                          tags=[t.strip() for t in form.get("tags", "").split(",") if t.strip()],
                          sample_size=max(_int(form.get("sample_size"), 0), 0),
                          sample_seed=max(_int(form.get("base_seed"), 0), 0))


@researcher_required
@require_GET
def round_form_preview(request: HttpRequest) -> HttpResponse:
    seeds = max(_int(request.GET.get("seeds_per_prompt"), 4), 1)
    preview = round_preview(prompt_count=len(prompt_ids_for_form(request.GET)), seeds_per_prompt=seeds)
    return render(request, "research/_round_preview.html", {"preview": preview})
