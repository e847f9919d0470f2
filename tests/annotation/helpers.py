"""Small helpers shared by the annotation tests."""

from __future__ import annotations

import re

from django.test import Client
from rest_framework.test import APIClient

from annotation.services.judgments import FlawInput, LabelInput


def login(user) -> Client:
    """A page client signed in as ``user``."""
    client = Client()
    client.force_login(user)
    return client


def api(user) -> APIClient:
    """An API client authenticated as ``user``."""
    client = APIClient()
    client.force_authenticate(user)
    return client


def by_position(assignment, answers: dict[int, str] | None = None, *, coverage: float = 1.0, ranks: dict[int, int] | None = None,
                flaws: dict[int, list[FlawInput]] | None = None) -> list[LabelInput]:
    """LabelInputs for every shown candidate: ``answers`` maps shown position -> label (others neutral)."""
    answers, ranks, flaws = answers or {}, ranks or {}, flaws or {}
    return [
        LabelInput(candidate_id=cid, label=answers.get(pos, "neutral"), rank=ranks.get(pos), playback_coverage=coverage,
                   flaws=tuple(flaws.get(pos, ())))
        for pos, cid in enumerate(assignment.shown_order)
    ]


def by_candidate(assignment, answers: dict[int, str], *, coverage: float = 1.0) -> list[LabelInput]:
    """LabelInputs naming candidates by id: ``answers`` maps candidate id -> label."""
    return [LabelInput(candidate_id=cid, label=answers.get(cid, "neutral"), playback_coverage=coverage)
            for cid in assignment.shown_order]


# Signed media links (/m/<payload>:<HMAC>) and CSRF tokens (64 random letters and digits) change on every run; by
# chance they may spell any short word ("seed" about once in 10^4 pages), so leak checks look at the text without them.
MEDIA_TOKEN = re.compile(r"/m/[\w:-]+")
CSRF_TOKEN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{64}(?![A-Za-z0-9])")


def without_random_tokens(text: str) -> str:
    return CSRF_TOKEN.sub("<csrf>", MEDIA_TOKEN.sub("/m/<token>", text))
