"""Bradley-Terry numerics (pure) and the leaderboard selector on a small loop."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.leaderboard import bt_bootstrap, bt_fit, leaderboard


def test_bt_two_players_ties_count_half():
    # A beats B 3 times, one tie: A's share is 3.5 / 4, so sigmoid(theta_A - theta_B) = 0.875 exactly (MLE)
    wins = np.array([[0.0, 3.5], [0.5, 0.0]])
    theta = bt_fit(wins, prior=0.0)
    assert 1 / (1 + np.exp(-(theta[0] - theta[1]))) == pytest.approx(0.875, abs=1e-8)
    assert theta.sum() == pytest.approx(0.0)


def test_bt_recovers_known_strengths():
    rng = np.random.default_rng(0)
    true = np.array([1.0, 0.0, -0.5, -1.5])
    k = len(true)
    wins = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            p = 1 / (1 + np.exp(-(true[i] - true[j])))
            w = rng.binomial(4000, p)
            wins[i, j], wins[j, i] = w, 4000 - w
    theta = bt_fit(wins, prior=0.0)
    assert np.allclose(theta, true - true.mean(), atol=0.06)


def test_bt_undefeated_stays_finite_and_bootstrap_brackets():
    per_prompt = np.zeros((30, 2, 2))
    per_prompt[:25, 0, 1] = 1.0  # A wins 25 prompts
    per_prompt[25:, 1, 0] = 1.0  # B wins 5
    theta = bt_fit(per_prompt.sum(0))
    low, high = bt_bootstrap(per_prompt, n_boot=300, seed=1)
    assert np.all(np.isfinite(theta)) and theta[0] > 0 > theta[1]
    assert low[0] < theta[0] < high[0] and low[0] > 0  # A is better with 95% confidence
    assert bt_fit(np.array([[0.0, 5.0], [0.0, 0.0]]))[0] < 10  # never won: finite thanks to the prior


@pytest.mark.django_db
def test_leaderboard_from_evaluation_round(loop):
    board = leaderboard(n_boot=100)
    names = [r["name"] for r in board["checkpoints"]]
    assert names == ["dpo-r1", "base-v1"]  # dpo wins 3 of 4 prompts, unanimously
    assert board["prompts"] == 4 and board["judgments"] == 12  # generation groups (one checkpoint) do not count
    dpo, base = board["checkpoints"]
    assert dpo["score"] == pytest.approx(0.75) and base["score"] == pytest.approx(0.25)
    assert dpo["ci_low"] <= dpo["strength"] <= dpo["ci_high"]
    assert board["win_matrix"]["rates"] == [[None, pytest.approx(0.75)], [pytest.approx(0.25), None]]
    assert board["categories"] and board["categories"][0]["prompts"] == 4
    assert board["tie_share"] == 0


@pytest.mark.django_db
def test_leaderboard_ties_and_all_good(loop):
    from tests.exports.factories import group, judge, prompt

    g = group(loop.eval_round, prompt(), checkpoints=[loop.dpo, loop.base], seeds=[9])
    judge(g, loop.annotators[0], preferred=[], non_preferred=[], outcome="all_good")
    judge(g, loop.annotators[1], preferred=[], non_preferred=[])  # both neutral: a tie
    board = leaderboard(n_boot=0)
    assert board["tie_share"] == pytest.approx(2 / 14)
    dpo = board["checkpoints"][0]
    assert dpo["score"] == pytest.approx((9 + 1) / 14)
    assert leaderboard(rounds=[loop.gen_round.pk], n_boot=0)["checkpoints"] == []


@pytest.mark.django_db
def test_the_leaderboard_page_adds_the_newest_reward_models_mean_score(loop, client):
    from annotation.models import Candidate, RewardRun, RewardScore
    from annotation.selectors.research import reward_means_by_checkpoint

    client.force_login(loop.researcher)
    assert "Reward (" not in client.get("/research/leaderboard/").content.decode()  # no reward scores: no column
    run = RewardRun.objects.create(name="rm-board", init_checkpoint=loop.base, status="done",
                                   config={"aspects": ["overall"]})
    for cand in Candidate.objects.filter(group__round=loop.eval_round):
        RewardScore.objects.create(run=run, candidate=cand, scores={"overall": 1.0 if cand.checkpoint == loop.dpo else -1.0})
    column = reward_means_by_checkpoint(checkpoint_ids=[loop.dpo.pk, loop.base.pk])
    assert column["run"] == run
    assert column["means"][loop.dpo.pk] == (pytest.approx(1.0), 4) and column["means"][loop.base.pk][0] == -1.0
    page = client.get("/research/leaderboard/").content.decode()
    assert "Reward (rm-board)" in page and '<td class="reward-mean">1.000 (4)</td>' in page
