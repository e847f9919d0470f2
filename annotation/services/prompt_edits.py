"""Editing single prompts from the API (the pool's create/import live in ``services.prompts``, reused here)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Subquery

from annotation.conf import videodpo
from annotation.errors import ApplicationError, error_messages
from annotation.models import CandidateGroup, Category, Prompt, PromptSet
from annotation.services.prompts import ERR_EMPTY, ERR_TOO_LONG, ERR_UNKNOWN_CATEGORY, prompt_hash

ERR_NUL = "prompt text contains a NUL character"
ERR_PROMPT_SET_NAME = "prompt set names have at most {max} characters and no NUL"
ERR_PROMPT_DUPLICATE = "This prompt already exists (prompt {id})."
ERR_PROMPT_IN_USE = "Prompt {id} has candidate groups; retire it (is_active=false) instead of deleting it."


class PromptError(ApplicationError):
    """A refused prompt edit (400)."""


def category_by_slug(slug: str | None) -> Category | None:
    if not slug:
        return None
    category = Category.objects.filter(slug=slug).first()
    if category is None:
        raise PromptError(ERR_UNKNOWN_CATEGORY.format(value=slug))
    return category


def prompt_set_by_name(name: str | None) -> PromptSet | None:
    """The prompt set called ``name``, created when new; None for no name."""
    if not name:
        return None
    limit = PromptSet._meta.get_field("name").max_length
    if len(name) > limit or "\x00" in name:
        raise PromptError(ERR_PROMPT_SET_NAME.format(max=limit))
    return PromptSet.objects.get_or_create(name=name)[0]


@transaction.atomic
def prompt_update(*, prompt: Prompt, **fields) -> Prompt:
    if "text" in fields:
        text = (fields.pop("text") or "").strip()
        if not text:
            raise PromptError(ERR_EMPTY)
        if "\x00" in text:
            raise PromptError(ERR_NUL)
        max_chars = videodpo().max_prompt_chars
        if len(text) > max_chars:
            raise PromptError(ERR_TOO_LONG.format(max=max_chars, n=len(text)))
        if text != prompt.text:
            # the groups made with the old text keep it (what their videos show and their annotators read)
            CandidateGroup.objects.filter(prompt_id=prompt.pk, prompt_text="").update(
                prompt_text=Subquery(Prompt.objects.filter(pk=prompt.pk).values("text")[:1])
            )
        prompt.text = text
        prompt.text_hash = prompt_hash(prompt.text)
        clash = Prompt.objects.filter(text_hash=prompt.text_hash).exclude(pk=prompt.pk).values_list("id", flat=True).first()
        if clash:
            raise PromptError(ERR_PROMPT_DUPLICATE.format(id=clash))
    if "category" in fields:
        prompt.category = category_by_slug(fields.pop("category"))
    if "prompt_set" in fields:
        name = fields.pop("prompt_set")
        prompt.prompt_set = prompt_set_by_name(name)
    for name in ("language", "source", "tags", "is_active", "is_held_out"):
        if name in fields:
            setattr(prompt, name, fields.pop(name))
    try:
        prompt.full_clean()
    except ValidationError as exc:
        raise PromptError("; ".join(error_messages(exc))) from exc
    prompt.save()
    return prompt


@transaction.atomic
def prompt_delete(*, prompt: Prompt) -> None:
    if prompt.groups.exists():
        raise PromptError(ERR_PROMPT_IN_USE.format(id=prompt.pk))
    prompt.delete()
