"""Accounts behind pseudonyms, for reviewers and researchers only (the QC page): never shown to annotators."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model


def account_names(*, user_ids: Iterable[int]) -> dict[int, str]:
    """user id -> "username (full name)" (one query)."""
    rows = get_user_model().objects.filter(pk__in=list(user_ids)).values_list("id", "username", "first_name",
                                                                              "last_name")
    out = {}
    for pk, username, first, last in rows:
        full = f"{first} {last}".strip()
        out[pk] = f"{username} ({full})" if full else username
    return out
