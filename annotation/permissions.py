"""Roles (Django groups created by migration 0002) and the checks every view and API uses: ``role_required`` for
function views, ``IsAnnotator`` / ``IsReviewer`` / ``IsResearcher`` for DRF, one message per role."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser
from django.shortcuts import render
from rest_framework.permissions import BasePermission

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


# -- the one permission style: a role per view, the same check and message for pages and the API -------------------
ERR_NOT_ANNOTATOR = "Only annotators can judge groups."
ERR_NOT_REVIEWER = "Only reviewers and researchers can see this."
ERR_NOT_RESEARCHER = "Only researchers can do this."
ROLE_CHECKS = {
    ANNOTATOR: (is_annotator, ERR_NOT_ANNOTATOR),
    REVIEWER: (is_reviewer, ERR_NOT_REVIEWER),
    RESEARCHER: (is_researcher, ERR_NOT_RESEARCHER),
}


def role_required(role: str):
    """Decorate a function view: anonymous users go to the login page; a user without ``role`` gets the
    "Not allowed" page (403) with the role's message."""
    check, message = ROLE_CHECKS[role]

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not check(request.user):
                return render(request, "annotation/forbidden.html", {"message": message}, status=403)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


annotator_required = role_required(ANNOTATOR)
reviewer_required = role_required(REVIEWER)
researcher_required = role_required(RESEARCHER)


class _RolePermission(BasePermission):
    """DRF: the same check and message as ``role_required`` (subclasses name the role)."""

    role = ""

    @property
    def message(self) -> str:
        return ROLE_CHECKS[self.role][1]

    def has_permission(self, request, view) -> bool:
        return ROLE_CHECKS[self.role][0](request.user)


class IsAnnotator(_RolePermission):
    role = ANNOTATOR


class IsReviewer(_RolePermission):
    role = REVIEWER


class IsResearcher(_RolePermission):
    role = RESEARCHER
