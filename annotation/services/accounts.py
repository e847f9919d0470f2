"""Users, roles and annotator profiles."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from annotation.models import AnnotatorProfile
from annotation.permissions import ROLES

ERR_UNKNOWN_ROLE = "Unknown role {role!r}: expected one of " + ", ".join(ROLES) + "."


def pseudonym_for(*, user_id: int) -> str:
    """A stable pseudonym (exports never carry user names): HMAC-SHA256 of the user id under the installation's
    secret (``SECRET_KEY``: random per installation when not configured), so nobody without it can map it back."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"annotator:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"ann-{digest[:12]}"


# The quick start's accounts: (username, password, roles). Created once; an existing account is never changed.
DEMO_ACCOUNTS = [
    ("researcher", "researcher-demo-2026", ["researcher"]),
    ("reviewer", "reviewer-demo-2026", ["reviewer"]),
    ("annotator", "annotator-demo-2026", ["annotator"]),
    ("annotator2", "annotator-demo-2026", ["annotator"]),
]
DEMO_ADMIN = "admin"


@transaction.atomic
def demo_accounts_ensure() -> list[tuple[str, str | None, list[str]]]:
    """Create the demo accounts that do not exist yet, and a superuser ``admin`` with a random password.

    Returns (username, password, roles) per account: the password only for an account created now (so the admin's
    is shown once), None for one that already existed (its password, possibly changed, stays)."""
    User = get_user_model()
    out: list[tuple[str, str | None, list[str]]] = []
    for username, password, roles in [*DEMO_ACCOUNTS, (DEMO_ADMIN, None, ["admin"])]:
        if User.objects.filter(username=username).exists():
            out.append((username, None, roles))
            continue
        password = password or secrets.token_urlsafe(12)
        user_create(username=username, password=password, roles=roles, is_superuser=username == DEMO_ADMIN)
        out.append((username, password, roles))
    return out


@transaction.atomic
def user_create(*, username: str, password: str, roles: list[str], email: str = "", is_superuser: bool = False):
    """Create (or update the password and roles of) a user; returns the user."""
    for role in roles:
        if role not in ROLES:
            raise ValueError(ERR_UNKNOWN_ROLE.format(role=role))
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=username, defaults={"email": email})
    user.set_password(password)
    user.is_staff = is_superuser or "researcher" in roles or "admin" in roles
    user.is_superuser = is_superuser
    user.full_clean(exclude=["password"])
    user.save()
    user.groups.set(Group.objects.filter(name__in=roles))
    annotator_profile_ensure(user=user)
    return user


def annotator_profile_ensure(*, user) -> AnnotatorProfile:
    profile = getattr(user, "_annotator_profile_cache", None)
    if profile is None:
        profile, _ = AnnotatorProfile.objects.get_or_create(user=user, defaults={"pseudonym": pseudonym_for(user_id=user.pk)})
    return profile


def annotator_profile_cache(*, user, profile: AnnotatorProfile | None) -> None:
    """Remember the profile loaded with the user for this request (the API token authentication joins it), so that
    ``annotator_profile_ensure`` needs no query. Only for a user object that lives as long as one request."""
    if profile is not None:
        user._annotator_profile_cache = profile
