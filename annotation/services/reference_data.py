"""Reference data every deployment needs: role groups, the 11 eval categories, the flaw taxonomy.

Migration 0002 creates them; this service re-creates whatever is missing (a flushed test database, a restored dump)
and is idempotent."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction

from annotation.defaults import (
    ADMIN_EXTRA_PERMISSIONS,
    CATEGORIES,
    FLAW_TAGS,
    ROLE_PERMISSIONS,
    WORLD_FLAW_TAGS,
    WORLD_HIDDEN_FLAW_TAGS,
)
from annotation.models import Category, FlawMark, FlawTag


@transaction.atomic
def reference_data_ensure() -> None:
    for role, perms in ROLE_PERMISSIONS.items():
        group, created = Group.objects.get_or_create(name=role)
        if not created:
            continue
        if perms == "__all__":
            group.permissions.set(Permission.objects.all())
        elif perms == "__all_annotation__":
            group.permissions.set(Permission.objects.filter(content_type__app_label__in=["annotation", "django_celery_results"]))
            if role == "admin":
                group.permissions.add(*Permission.objects.filter(content_type__app_label="auth",
                                                                 codename__in=ADMIN_EXTRA_PERMISSIONS))
        else:
            group.permissions.set(Permission.objects.filter(content_type__app_label="annotation", codename__in=perms))
    for slug, name in CATEGORIES:
        Category.objects.get_or_create(slug=slug, defaults={"name": name})
    for order, (slug, name) in enumerate(FLAW_TAGS):
        FlawTag.objects.get_or_create(slug=slug, defaults={"name": name, "order": order})


def demo_flaw_tags_ensure(*, hide_unseen: bool) -> None:
    """The shapes world's flaw tags (wrong colour, count, shape, motion; a broken object), after the defaults. With
    ``hide_unseen`` (the demo setting up a database) the default tags no shapes clip can show are deactivated,
    unless a judgment already used them; an admin can turn them back on."""
    start = len(FLAW_TAGS)
    for order, (slug, name, description) in enumerate(WORLD_FLAW_TAGS, start=start):
        FlawTag.objects.get_or_create(slug=slug, defaults={"name": name, "description": description, "order": order})
    if hide_unseen:
        FlawTag.objects.filter(slug__in=WORLD_HIDDEN_FLAW_TAGS, is_active=True).exclude(
            pk__in=FlawMark.objects.values("tag_id")).update(is_active=False)
