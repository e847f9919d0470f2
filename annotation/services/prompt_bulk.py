"""Bulk edits of the prompt pool (the admin's and the research pages' actions): activate, retire, held out or not,
add or remove tags, set or clear the category. Returns how many prompts changed."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from annotation.errors import ApplicationError
from annotation.models import Category, Prompt

ERR_NO_CATEGORY = "There is no category {value}."
ERR_NO_PROMPTS = "Select at least one prompt."
ERR_BAD_TAG = "A tag is 1 to 64 characters (got {value!r})."
ERR_NOTHING_TO_DO = "Choose what to change."
TAG_MAX = 64

# sentinel: "leave the category as it is" (``None`` clears it)
KEEP = object()


def _tags(tags: Iterable[str]) -> set[str]:
    out = set()
    for t in tags:
        t = (t or "").strip()
        if not t:
            continue
        if len(t) > TAG_MAX or "\x00" in t:
            raise ApplicationError(ERR_BAD_TAG.format(value=t[:80]))
        out.add(t)
    return out


@transaction.atomic
def prompts_bulk_set(*, prompt_ids: Iterable[int], is_active: bool | None = None, is_held_out: bool | None = None,
                     add_tags: Iterable[str] = (), remove_tags: Iterable[str] = (), category_id=KEEP) -> int:
    """Apply the given changes to the prompts ``prompt_ids`` (unknown ids are ignored). ``category_id``: a category's
    id, ``None`` to clear it, ``KEEP`` (default) to leave it. Tags are added once and kept sorted."""
    ids = list(prompt_ids)
    changes: dict = {k: v for k, v in (("is_active", is_active), ("is_held_out", is_held_out)) if v is not None}
    if category_id is not KEEP:
        if category_id is not None and not Category.objects.filter(pk=category_id).exists():
            raise ApplicationError(ERR_NO_CATEGORY.format(value=category_id))
        changes["category_id"] = category_id
    changed = Prompt.objects.filter(id__in=ids).update(**changes) if changes else 0
    add, remove = _tags(add_tags), _tags(remove_tags)
    if add or remove:
        rows = list(Prompt.objects.select_for_update().filter(id__in=ids).only("id", "tags"))
        touched = []
        for p in rows:
            new = sorted((set(p.tags or []) | add) - remove)
            if new != list(p.tags or []):
                p.tags = new
                touched.append(p)
        Prompt.objects.bulk_update(touched, ["tags"])
        changed = max(changed, len(touched))
    return changed
