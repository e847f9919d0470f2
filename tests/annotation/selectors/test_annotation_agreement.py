import pytest

from annotation.agreement import LabelRow, aggregate, implied_pairs, krippendorff_alpha, pairwise_agreement

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the 4 observers x 12 units example
# (None = missing): alpha nominal 0.743, ordinal 0.815.
RELIABILITY = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def units():
    return {u: [row[u] for row in RELIABILITY if row[u] is not None] for u in range(12)}


def test_alpha_matches_krippendorffs_worked_example():
    assert krippendorff_alpha(units(), level="nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units(), level="ordinal") == pytest.approx(0.815, abs=5e-4)


def test_alpha_perfect_and_undefined():
    assert krippendorff_alpha({1: [0, 0], 2: [2, 2], 3: [1, 1]}) == 1.0
    assert krippendorff_alpha({1: [1, 1], 2: [1, 1]}) is None
    assert pairwise_agreement({1: [0, 0, 1], 2: [2, 2]}) == pytest.approx(2 / 4)


def test_implied_pairs_per_mode():
    labels = [LabelRow(1, "preferred"), LabelRow(2, "neutral"), LabelRow(3, "non_preferred")]
    assert implied_pairs(outcome="labelled", mode="labels", labels=labels) == {(1, 3)}
    assert implied_pairs(outcome="labelled", mode="best_worst", labels=labels) == {(1, 2), (1, 3), (2, 3)}
    ranks = [LabelRow(1, "neutral", 2), LabelRow(2, "neutral", 1), LabelRow(3, "neutral", 3)]
    assert implied_pairs(outcome="labelled", mode="ranking", labels=ranks) == {(2, 1), (2, 3), (1, 3)}
    assert implied_pairs(outcome="all_bad", mode="labels", labels=labels) == set()


def test_aggregate_majority_tie_and_conflict():
    result = aggregate(judgments=[(1, {(1, 2)}, True), (2, {(2, 1)}, True), (3, set(), True)], min_majority=2 / 3)
    assert result.pairs == [] and result.conflicts == [(1, 2)]
    result = aggregate(judgments=[(1, {(1, 2)}, True), (2, {(1, 2)}, True), (3, {(2, 1)}, True)], min_majority=2 / 3)
    (pair,) = result.pairs
    assert (pair.chosen, pair.votes_for, pair.votes_against, pair.judgment_ids) == (1, 2, 1, (1, 2))
    assert pair.agreement == pytest.approx(2 / 3) and pair.weight == pytest.approx(1 / 3) and not result.disagreement
