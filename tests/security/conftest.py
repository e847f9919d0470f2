"""Fixtures of the security tests: a clean cache (DRF throttle counters live there) for each test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
