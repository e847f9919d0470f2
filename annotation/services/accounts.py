"""Users, roles and annotator profiles."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from annotation.models import AnnotatorProfile
from annotation.permissions import ROLES

ERR_UNKNOWN_ROLE = "Unknown role {role!r}: expected one of " + ", ".join(ROLES) + "."


def pseudonym_for(*, user_id: int) -> str:
    """A stable pseudonym (exports never carry user names): keyed hash of the user id."""
    digest = hashlib.sha256(f"{settings.SECRET_KEY}:annotator:{user_id}".encode()).hexdigest()
    return f"ann-{digest[:12]}"


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
