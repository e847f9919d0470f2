"""The researcher's prompt list: filter the pool, tick prompts (or take every prompt the filter matches) and apply a
bulk action (activate, retire, held out or not, add/remove a tag, set the category) through
``services.prompt_bulk``. Plain POST-and-redirect; a refused action shows the page again (400) with the ticks kept."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation.errors import ApplicationError, error_messages, html_errors, is_int
from annotation.models import Prompt
from annotation.permissions import researcher_required
from annotation.selectors.prompt_list import (
    PAGE_SIZE,
    PromptFilter,
    prompt_filter_choices,
    prompt_list_page,
    prompts_filtered,
)
from annotation.services.prompt_bulk import prompts_bulk_set

ERR_NOT_A_NUMBER = "{name} must be a whole number (got {value!r})."
ERR_BAD_CHOICE = "{name}: {value!r} is not one of the choices."
ERR_UNKNOWN_ACTION = "Choose an action (got {value!r})."
ERR_NO_SELECTION = "Tick at least one prompt, or choose 'every prompt that matches the filter'."
ERR_NO_TAG = "Type the tag to add or remove."

YES_NO = {"": None, "yes": True, "no": False}
ACTIONS = {
    "activate": ("Activated", {"is_active": True}),
    "retire": ("Retired", {"is_active": False}),
    "held_out": ("Marked held out", {"is_held_out": True}),
    "not_held_out": ("Cleared held out on", {"is_held_out": False}),
    "add_tag": ("Tagged", None),
    "remove_tag": ("Untagged", None),
    "set_category": ("Set the category of", None),
}


def _number(params: QueryDict, name: str, label: str) -> int | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if not is_int(value):
        raise ApplicationError(ERR_NOT_A_NUMBER.format(name=label, value=value[:40]))
    return int(value)


def _yes_no(params: QueryDict, name: str, label: str) -> bool | None:
    value = params.get(name, "")
    if value not in YES_NO:
        raise ApplicationError(ERR_BAD_CHOICE.format(name=label, value=value[:40]))
    return YES_NO[value]


def _filter(params: QueryDict) -> PromptFilter:
    language = params.get("language", "")
    if language and language not in Prompt.Language.values:
        raise ApplicationError(ERR_BAD_CHOICE.format(name="Language", value=language[:40]))
    category = params.get("category", "")
    return PromptFilter(
        q=params.get("q", "").strip()[:200], tag=params.get("tag", "").strip()[:64], language=language,
        no_category=category == "none", category_id=None if category == "none" else _number(params, "category",
                                                                                                 "Category"),
        prompt_set_id=_number(params, "prompt_set", "Prompt set"),
        is_active=_yes_no(params, "active", "Active"), is_held_out=_yes_no(params, "held_out", "Held out"),
    )


def _page(request: HttpRequest, *, error: str = "", selected: set[int] = frozenset(), form: dict | None = None,
          status: int = 200) -> HttpResponse:
    f = _filter(request.GET)
    page = _number(request.GET, "page", "Page") or 1
    prompts, total = prompt_list_page(f=f, page=page)
    pages = max(1, -(-total // PAGE_SIZE))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "research/prompt_list.html", {
        **prompt_filter_choices(), "f": f, "prompts": prompts, "total": total, "page": page, "pages": pages,
        "query": query.urlencode(), "prev_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if page < pages else None, "active": request.GET.get("active", ""),
        "held_out": request.GET.get("held_out", ""), "category": request.GET.get("category", ""),
        "error": error, "selected": selected, "form": form or {}, "actions": ACTIONS,
    }, status=status)


@researcher_required
@require_GET
@html_errors
def prompt_list(request: HttpRequest) -> HttpResponse:
    return _page(request)


def _bulk(request: HttpRequest, selected: set[int]) -> str:
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        raise ApplicationError(ERR_UNKNOWN_ACTION.format(value=action[:40]))
    if request.POST.get("scope") == "all":
        ids = list(prompts_filtered(f=_filter(request.GET)).values_list("id", flat=True))
    else:
        ids = sorted(selected)
    if not ids:
        raise ApplicationError(ERR_NO_SELECTION)
    done, changes = ACTIONS[action]
    if changes is None:
        if action == "set_category":
            category = request.POST.get("set_category", "").strip()
            if category and not is_int(category):
                raise ApplicationError(ERR_NOT_A_NUMBER.format(name="Category", value=category[:40]))
            changes = {"category_id": int(category) if category else None}
        else:
            tag = request.POST.get("bulk_tag", "").strip()
            if not tag:
                raise ApplicationError(ERR_NO_TAG)
            changes = {"add_tags" if action == "add_tag" else "remove_tags": [tag]}
    n = prompts_bulk_set(prompt_ids=ids, **changes)
    return f"{done} {n} prompt{'s' if n != 1 else ''} (of {len(ids)} chosen)."


@researcher_required
@require_POST
@html_errors
def prompt_bulk(request: HttpRequest) -> HttpResponse:
    raw = request.POST.getlist("ids")
    bad = next((v for v in raw if not is_int(v)), None)
    if bad is not None:
        raise ApplicationError(ERR_NOT_A_NUMBER.format(name="A prompt id", value=bad[:40]))
    selected = {int(v) for v in raw}
    try:
        messages.success(request, _bulk(request, selected))
    except ApplicationError as exc:
        form = {k: request.POST.get(k, "") for k in ("action", "scope", "bulk_tag", "set_category")}
        return _page(request, error=" ".join(error_messages(exc)), selected=selected, form=form, status=exc.status)
    query = request.GET.urlencode()
    return redirect(reverse("research-prompt-list") + (f"?{query}" if query else ""))
