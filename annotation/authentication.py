"""Authentication: API tokens (django-rest-knox: stored hashed, expiring, revoked by logout) and the login lockout.

``TokenAuthentication`` reads in one query what every annotator call needs next: the token, its user, the user's role
names and annotator profile (knox's own class reads the token and user, then every other token of the user, then the
roles and the profile in further queries)."""

from __future__ import annotations

import binascii
from hmac import compare_digest

from axes.backends import AxesStandaloneBackend
from django.contrib.auth.models import Group
from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import OuterRef
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework import exceptions

from annotation.permissions import user_roles_set
from annotation.services.accounts import annotator_profile_cache

ERR_INVALID_TOKEN = _("Invalid or expired token.")
ERR_USER_INACTIVE = _("User inactive or deleted.")


class TokenAuthentication(KnoxTokenAuthentication):
    """``Authorization: Token <key>``. A bad, expired or revoked token answers 401 with ``WWW-Authenticate: Token``."""

    def authenticate_credentials(self, token: bytes):
        try:
            token = token.decode("ascii")
            digest = hash_token(token)
        except (UnicodeDecodeError, TypeError, ValueError, binascii.Error):
            raise exceptions.AuthenticationFailed(ERR_INVALID_TOKEN) from None
        roles = ArraySubquery(Group.objects.filter(user=OuterRef("user_id")).values("name"))
        rows = (
            AuthToken.objects.filter(token_key=token[: CONSTANTS.TOKEN_KEY_LENGTH])
            .select_related("user", "user__annotator_profile")
            .annotate(role_names=roles)
        )
        now = timezone.now()
        for auth_token in rows:
            if not compare_digest(digest, auth_token.digest):
                continue
            if auth_token.expiry is not None and auth_token.expiry <= now:
                auth_token.delete()
                break
            user = auth_token.user
            if not user.is_active:
                raise exceptions.AuthenticationFailed(ERR_USER_INACTIVE)
            user_roles_set(user, auth_token.role_names)
            annotator_profile_cache(user=user, profile=getattr(user, "annotator_profile", None))
            return user, auth_token
        raise exceptions.AuthenticationFailed(ERR_INVALID_TOKEN)


class TokenScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of ``TokenAuthentication`` (``Authorization: Token <token>``)."""

    target_class = TokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Token")


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check for every login made from a request (the login page, the token endpoint, the
    admin); calls without a request (management commands, the test client's ``login``) are not counted."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


ERR_LOCKED_OUT = "Too many failed logins for this account from your address; try again later."


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out login (429): ``{"detail": ...}`` for the API, the login page otherwise."""
    from django.contrib.auth.forms import AuthenticationForm
    from django.http import JsonResponse
    from django.shortcuts import render

    if request.path.startswith("/api/"):
        return JsonResponse({"detail": ERR_LOCKED_OUT}, status=429)
    return render(request, "registration/login.html", {"form": AuthenticationForm(request), "lockout": ERR_LOCKED_OUT},
                  status=429)
