"""Bulk edits of the prompt pool (the admin's and the research pages' actions): activate, retire, held out or not,
add tags. One UPDATE per action; returns how many prompts changed."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from annotation.models import Prompt


@transaction.atomic
def prompts_bulk_set(*, prompt_ids: Iterable[int], is_active: bool | None = None, is_held_out: bool | None = None,
                     add_tags: Iterable[str] = ()) -> int:
    ids = list(prompt_ids)
    changes = {k: v for k, v in (("is_active", is_active), ("is_held_out", is_held_out)) if v is not None}
    changed = Prompt.objects.filter(id__in=ids).update(**changes) if changes else 0
    tags = sorted({t.strip() for t in add_tags if t and t.strip()})
    if tags:
        rows = list(Prompt.objects.select_for_update().filter(id__in=ids).only("id", "tags"))
        for p in rows:
            p.tags = sorted(set(p.tags or []) | set(tags))
        Prompt.objects.bulk_update(rows, ["tags"])
        changed = max(changed, len(rows))
    return changed
