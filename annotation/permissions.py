"""Roles (Django groups created by migration 0002) and the checks every view and API uses."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

ANNOTATOR, REVIEWER, RESEARCHER, ADMIN = "annotator", "reviewer", "researcher", "admin"
ROLES = (ANNOTATOR, REVIEWER, RESEARCHER, ADMIN)


def user_roles(user: AbstractBaseUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_roles_cache", None)
    if cached is None:
        cached = user_roles_set(user, user.groups.values_list("name", flat=True))
    return cached


def user_roles_set(user: AbstractBaseUser, group_names) -> set[str]:
    """Cache the user's roles from their group names (already loaded, e.g. with the API token in one query)."""
    roles = set(group_names or ())
    if user.is_superuser:
        roles |= {ADMIN, RESEARCHER, REVIEWER}
    user._roles_cache = roles
    return roles


def is_researcher(user) -> bool:
    return bool(user_roles(user) & {RESEARCHER, ADMIN})


def is_reviewer(user) -> bool:
    return bool(user_roles(user) & {REVIEWER, RESEARCHER, ADMIN})


def is_annotator(user) -> bool:
    return ANNOTATOR in user_roles(user)


# -- DRF permission classes (the same checks for the API) -------------------------------------------------------------
from rest_framework.permissions import BasePermission  # noqa: E402


class IsAnnotator(BasePermission):
    message = "Only annotators can do this."

    def has_permission(self, request, view) -> bool:
        return is_annotator(request.user)


class IsReviewer(BasePermission):
    message = "Only reviewers and researchers can do this."

    def has_permission(self, request, view) -> bool:
        return is_reviewer(request.user)


class IsResearcher(BasePermission):
    message = "Only researchers can do this."

    def has_permission(self, request, view) -> bool:
        return is_researcher(request.user)
