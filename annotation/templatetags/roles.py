"""``{% load roles %}``: the signed-in user's roles for templates (navigation by role), from ``annotation.permissions``."""

from __future__ import annotations

from django import template

from annotation import permissions

register = template.Library()


@register.filter
def roles(user) -> dict[str, bool]:
    """``{% with r=user|roles %}{% if r.reviewer %}...``: what the user may open (no role for anonymous users, and
    for the context-less 500 page where ``user`` is missing)."""
    if not getattr(user, "is_authenticated", False):
        return {"annotator": False, "reviewer": False, "researcher": False, "staff": False}
    return {
        "annotator": permissions.is_annotator(user),
        "reviewer": permissions.is_reviewer(user),
        "researcher": permissions.is_researcher(user),
        "staff": bool(user.is_staff),
    }
