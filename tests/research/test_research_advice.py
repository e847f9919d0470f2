"""QC and leaderboard you can act on (issue 18 item 13): QC opens on the latest round with data and says when a round
has none; the leaderboard warns on small samples and high tie rates and keeps its selection in the URL."""

from __future__ import annotations

import pytest

from annotation.models import Round
from annotation.selectors.advice import MAX_TIE_SHARE, leaderboard_warnings
from tests.exports.factories import build_loop

pytestmark = pytest.mark.django_db


def test_qc_defaults_to_the_latest_round_with_data_and_says_when_there_is_none(client):
    loop = build_loop(n_prompts=2)
    empty = Round.objects.create(name="fresh-empty", policy_checkpoint=loop.base, num_steps=2, cfg_scale=1, shift=1,
                                 height=16, width=16, num_frames=4, fps=25)
    client.force_login(loop.researcher)
    page = client.get("/qc/").content.decode()
    assert f'<option value="{loop.eval_round.pk}" selected>' in page and 'id="qc-empty"' not in page
    page = client.get(f"/qc/?round={empty.pk}").content.decode()
    assert "Round fresh-empty has no judgments yet" in page


def test_leaderboard_warns_on_few_prompts_and_many_ties(client):
    loop = build_loop(n_prompts=4)
    client.force_login(loop.researcher)
    page = client.get("/research/leaderboard/").content.decode()
    assert "Only 4 prompts" in page and 'hx-push-url="true"' in page
    per_category = page.split("Per category")[1]
    from annotation.models import Prompt

    category = Prompt.objects.select_related("category").first().category
    assert f"<td>{category.name}</td>" in per_category and f"<td>{category.slug}</td>" not in per_category
    board = {"checkpoints": [{"name": "a"}], "prompts": 50, "tie_share": MAX_TIE_SHARE + 0.36}
    (warning,) = leaderboard_warnings(board)
    assert "86% of the comparisons are ties" in warning
    assert leaderboard_warnings({**board, "tie_share": 0.1}) == []
    assert leaderboard_warnings({"checkpoints": [], "prompts": 0, "tie_share": None}) == []
