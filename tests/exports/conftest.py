from __future__ import annotations

import pytest


@pytest.fixture
def loop(db):
    from tests.exports.factories import build_loop

    return build_loop(n_prompts=4)

