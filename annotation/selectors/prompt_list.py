"""The researcher's prompt list (``/research/prompts/``): the pool filtered by text, category, language, prompt set,
tag, active and held-out, a page at a time. The same filter picks the prompts of a bulk action on "all matching"."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from annotation.models import Category, Prompt, PromptSet

PAGE_SIZE = 50


@dataclass(frozen=True)
class PromptFilter:
    q: str = ""
    category_id: int | None = None
    no_category: bool = False
    language: str = ""
    prompt_set_id: int | None = None
    tag: str = ""
    is_active: bool | None = None
    is_held_out: bool | None = None


def prompts_filtered(*, f: PromptFilter) -> QuerySet[Prompt]:
    qs = Prompt.objects.all()
    if f.q:
        qs = qs.filter(text__icontains=f.q)
    if f.no_category:
        qs = qs.filter(category__isnull=True)
    elif f.category_id is not None:
        qs = qs.filter(category_id=f.category_id)
    if f.language:
        qs = qs.filter(language=f.language)
    if f.prompt_set_id is not None:
        qs = qs.filter(prompt_set_id=f.prompt_set_id)
    if f.tag:
        qs = qs.filter(tags__contains=[f.tag])
    if f.is_active is not None:
        qs = qs.filter(is_active=f.is_active)
    if f.is_held_out is not None:
        qs = qs.filter(is_held_out=f.is_held_out)
    return qs


def prompt_list_page(*, f: PromptFilter, page: int = 1) -> tuple[list[Prompt], int]:
    """(prompts of this page, newest first; number of matching prompts). Two queries whatever the page."""
    qs = prompts_filtered(f=f)
    total = qs.count()
    start = (max(page, 1) - 1) * PAGE_SIZE
    rows = list(qs.select_related("category", "prompt_set").order_by("-id")[start:start + PAGE_SIZE])
    return rows, total


def prompt_filter_choices() -> dict:
    return {
        "categories": list(Category.objects.order_by("name").only("id", "name")),
        "prompt_sets": list(PromptSet.objects.order_by("name").only("id", "name")[:500]),
        "languages": Prompt.Language.choices,
    }
