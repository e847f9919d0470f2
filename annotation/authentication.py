"""API token authentication that loads in one query what every annotator call needs next: the token, its user, the
user's role names and annotator profile (DRF's own class reads the token and user, then the roles in a second query
and the profile in a third)."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import OuterRef
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from annotation.permissions import user_roles_set
from annotation.services.accounts import annotator_profile_cache


class TokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>``, as DRF's, with the same answers for a bad or inactive token."""

    def authenticate_credentials(self, key):
        model = self.get_model()
        roles = ArraySubquery(Group.objects.filter(user=OuterRef("user_id")).values("name"))
        try:
            token = model.objects.select_related("user", "user__annotator_profile").annotate(role_names=roles).get(key=key)
        except model.DoesNotExist:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from None
        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        user_roles_set(user, token.role_names)
        annotator_profile_cache(user=user, profile=getattr(user, "annotator_profile", None))
        return user, token
