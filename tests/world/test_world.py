"""The shapes world without a model: grammar round trips (en / zh), renderer determinism, detectors on rendered
ground truth and on corrupted clips, annotator policies in every mode through the app's pair logic."""

from __future__ import annotations

import numpy as np
import pytest

from annotation import agreement
from annotation.models import Judgment, Round
from model.world import annotators, grammar
from model.world.detect import observe, score_clip
from model.world.render import render


def test_every_spec_round_trips_through_both_languages():
    rng = np.random.default_rng(0)
    for _ in range(500):
        spec = grammar.sample_spec(rng)
        for lang in grammar.LANGUAGES:
            assert grammar.parse(grammar.to_prompt(spec, lang)) == spec
    assert grammar.parse("A red circle moving right on a black background. Ultra HD") is not None


@pytest.mark.parametrize("text", ["a cat on a sofa", "a red circles moving right on a black background",
                                  "two red circle moving right on a black background",
                                  "a black circle moving right on a red background", "一只猫", "",
                                  "a red circle staying still quickly on a black background"])
def test_out_of_grammar_prompts_are_not_scorable(text):
    assert grammar.parse(text) is None
    scores = score_clip(text, np.zeros((17, 64, 64, 3), np.uint8))
    assert not scores.scorable and scores.ta is None and scores.mq is None and scores.vq is None


def test_tokenizers_split_the_grammar_words(tmp_path):
    from model.world import default_root

    root = default_root()
    if not (root / "step_llm").is_dir():
        pytest.skip("trained root not present")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(root / "step_llm" / "step1_chat_tokenizer.model"))
    pieces = sp.encode("three small yellow triangles moving left quickly on a gray background", out_type=str)
    for word in ("yellow", "triangle", "gray"):
        assert any(word in p for p in pieces), pieces
    zh = sp.encode("黑色背景上，两个红色的大圆形向右移动", out_type=str)
    assert "<0x" not in "".join(zh) and len(zh) <= 12, zh  # no byte fallback: the Chinese words are in the vocab
    vocab = (root / "hunyuan_clip" / "tokenizer" / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert {"triangle", "yellow", "bouncing", "圆", "弹"} <= set(vocab)


def test_the_prompt_pool_is_bilingual_and_the_held_out_split_is_fixed():
    prompts = grammar.sample_prompts(20, seed=1)
    assert sum(grammar.parse(p) is not None for p in prompts) == 20
    assert any("背景" in p for p in prompts) and any("background" in p for p in prompts)
    held = grammar.sample_prompts(20, seed=2, held_out=True)
    assert all(grammar.is_held_out(grammar.parse(p)) for p in held)
    assert not set(held) & set(grammar.sample_prompts(200, seed=3, held_out=False))


@pytest.mark.parametrize("size", [32, 64])
def test_render_is_deterministic_per_prompt_and_seed(size):
    p = "two small green squares moving up quickly on a white background"
    a, b, c = render(p, 5, size=size), render(p, 5, size=size), render(p, 6, size=size)
    assert a.shape == (17, size, size, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="outside the shapes grammar"):
        render("a cat", 0)


def test_detectors_read_the_rendered_ground_truth():
    rng = np.random.default_rng(7)
    ta, mq, vq = [], [], []
    for i in range(120):
        spec = grammar.sample_spec(rng)
        s = score_clip(spec, render(spec, i))
        ta.append(s.ta)
        mq.append(s.mq)
        vq.append(s.vq)
    assert np.mean(ta) > 0.99 and min(ta) >= 0.8
    assert np.mean(mq) > 0.9 and np.mean(vq) > 0.95


def test_detectors_see_the_wrong_attributes():
    prompt = "a big red circle moving right slowly on a black background"
    s = score_clip(prompt, render("three small blue triangles moving up quickly on a white background", 0))
    assert s.ta == 0.0 and not any(s.checks.values())
    partial = score_clip(prompt, render("a big red circle moving left slowly on a black background", 0))
    assert partial.checks == {"shape": True, "colour": True, "count": True, "size": True, "motion": False,
                              "speed": True, "background": True}
    obs = observe(render("a green triangle bouncing on a gray background", 1))
    assert (obs.shape, obs.colour, obs.motion, obs.background) == ("triangle", "green", "bouncing", "gray")


def test_motion_and_visual_quality_fall_for_flicker_and_noise():
    prompt = "a red circle moving right on a black background"
    clean = render(prompt, 0)
    flicker = clean.copy()
    flicker[::2] = 0  # the object vanishes every other frame
    noisy = np.clip(clean.astype(int) + np.random.default_rng(0).normal(0, 40, clean.shape), 0, 255).astype(np.uint8)
    s_clean, s_flicker, s_noisy = (score_clip(prompt, x) for x in (clean, flicker, noisy))
    assert s_flicker.mq < s_clean.mq - 0.2
    assert s_noisy.vq < s_clean.vq - 0.3


def test_the_annotator_vocabulary_is_the_apps():
    assert (annotators.PREFERRED, annotators.NON_PREFERRED, annotators.NEUTRAL, annotators.LABELLED) == (
        agreement.PREFERRED, agreement.NON_PREFERRED, agreement.NEUTRAL, agreement.LABELLED)
    assert {annotators.ALL_GOOD, annotators.ALL_BAD} <= set(Judgment.Outcome.values)
    assert set(annotators.MODES) == set(Round.Mode.values)
    assert annotators.ASPECTS == agreement.ASPECTS


def test_scripted_aspect_labels_follow_each_score_and_feed_the_apps_aspect_majority():
    from model.world.detect import ClipScores

    def clip(ta, mq, vq):
        return ClipScores(scorable=True, ta=ta, mq=mq, vq=vq)

    # clip 0 follows the prompt best but moves worst; clip 1 is the sharpest; clip 2 is in the middle on all three
    scores = [clip(0.9, 0.1, 0.5), clip(0.2, 0.5, 0.9), clip(0.5, 0.3, 0.6)]
    labels = annotators.AnnotatorPolicy().aspect_labels(scores, rng=np.random.default_rng(0))
    assert [lab["ta"] for lab in labels] == ["preferred", "non_preferred", "neutral"]
    assert [lab["mq"] for lab in labels] == ["non_preferred", "preferred", "neutral"]
    assert [lab["vq"] for lab in labels] == ["non_preferred", "preferred", "neutral"]
    out = agreement.aspect_outcomes(chosen=0, rejected=1, judgments=[dict(enumerate(labels))] * 3)
    assert out == {"vq": agreement.REJECTED, "mq": agreement.REJECTED, "ta": agreement.CHOSEN}
    unscorable = ClipScores(scorable=False, ta=None, mq=None, vq=None)
    assert annotators.AnnotatorPolicy().aspect_labels([unscorable, clip(0.9, 0.9, 0.9)], rng=np.random.default_rng(0))[0] == {
        "vq": "non_preferred", "mq": "non_preferred", "ta": "non_preferred"}


@pytest.mark.parametrize("mode", annotators.MODES)
def test_a_noise_free_policy_implies_the_true_order_in_every_mode(mode):
    policy = annotators.AnnotatorPolicy()
    utilities = [0.2, 0.9, 0.5, 0.6]
    j = policy.judge(utilities=utilities, mode=mode, rng=np.random.default_rng(0))
    rows = [agreement.LabelRow(candidate_id=i, label=lab, rank=j.ranks[i] if j.ranks else None)
            for i, lab in enumerate(j.labels)]
    pairs = agreement.implied_pairs(outcome=j.outcome, mode=mode, labels=rows)
    assert pairs and all(utilities[w] > utilities[lo] for w, lo in pairs)
    assert (1, 0) in pairs


def test_noise_position_bias_and_ties_are_measurable():
    rng = np.random.default_rng(0)
    biased = annotators.AnnotatorPolicy(position_bias=0.5)
    first_wins = np.mean([biased.judge(utilities=list(rng.random(2)), mode="labels", rng=rng).labels[0]
                          == annotators.PREFERRED for _ in range(400)])
    assert first_wins > 0.8
    ties = annotators.AnnotatorPolicy(tie_rate=0.3)
    tie_share = np.mean([ties.judge(utilities=[0.1, 0.9], mode="labels", rng=rng).outcome != annotators.LABELLED
                         for _ in range(400)])
    assert 0.2 < tie_share < 0.4
    noisy = annotators.AnnotatorPolicy(noise=0.5)
    agree = np.mean([noisy.judge(utilities=[0.4, 0.6], mode="labels", rng=rng).labels[1] == annotators.PREFERRED
                     for _ in range(400)])
    assert 0.5 < agree < 0.75
    rand = annotators.RandomAnnotator()
    assert 0.4 < np.mean([rand.judge(utilities=[0.0, 1.0], mode="labels", rng=rng).labels[1] == annotators.PREFERRED
                          for _ in range(400)]) < 0.6
