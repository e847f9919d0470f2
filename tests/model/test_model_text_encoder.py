"""Step-LLM and Hunyuan-CLIP wrappers on the tiny model root."""

import dataclasses

import pytest
import torch

from model.presets import get_preset
from model.text_encoder import StepLLM, alibi_slopes, sqrt_alibi_bias


def test_alibi_slopes_48_heads():
    s = alibi_slopes(48)
    assert s.shape == (48,)
    torch.testing.assert_close(s[:32], torch.tensor([2 ** (-8 / 32 * (i + 1)) for i in range(32)]))
    torch.testing.assert_close(s[32:], torch.tensor([2 ** (-4 / 32 * (2 * i + 1)) for i in range(16)]))


def test_sqrt_alibi_bias_values():
    b = sqrt_alibi_bias(4, 5, "cpu")
    slopes = alibi_slopes(4)
    assert b.shape == (1, 4, 5, 5)
    assert b[0, 2, 4, 0].item() == pytest.approx(-slopes[2].item() * 2.0)  # sqrt(4 - 0) = 2
    assert torch.all(b[0, :, torch.arange(5), torch.arange(5)] == 0)


def test_step_llm_valid_outputs_independent_of_padding():
    cfg = get_preset("tiny").step_llm
    torch.manual_seed(0)
    llm = StepLLM(cfg)
    llm.init_weights()
    ids = torch.randint(3, cfg.padded_vocab_size, (1, 9))
    padded = torch.cat([ids, torch.full((1, 20), cfg.pad_id)], dim=1)
    with torch.no_grad():
        short, long = llm(ids), llm(padded)
    torch.testing.assert_close(long[:, :9], short, rtol=1e-5, atol=1e-5)


def test_step_llm_gqa_groups_are_used():
    """With the kv rows of group 0 zeroed, heads 0..H/G-1 output zero and the others do not."""
    cfg = dataclasses.replace(get_preset("tiny").step_llm, num_layers=1)
    torch.manual_seed(0)
    llm = StepLLM(cfg)
    llm.init_weights()
    attn = llm.transformer.layers[0].attention
    D, hd = cfg.hidden_size, cfg.head_dim
    with torch.no_grad():
        attn.wqkv.weight[D + hd : D + 2 * hd] = 0  # v of group 0 (rows [k_g0 | v_g0 | k_g1 | v_g1])
    seen = {}
    attn.wo.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    with torch.no_grad():
        llm(torch.randint(3, 100, (1, 6)))
    per_group = cfg.num_attention_heads // cfg.num_attention_groups
    assert torch.all(seen["x"][..., : per_group * hd] == 0)
    assert seen["x"][..., per_group * hd :].abs().sum() > 0


def test_tokenizer_framing_and_truncation(tiny_pipeline):
    tok = tiny_pipeline.text_encoders.llm_tokenizer
    ids, mask, truncated = tok(["a cat", "word " * 500])
    L = tok.cfg.max_length
    assert ids.shape == mask.shape == (2, L)
    n = int(mask[0].sum())
    assert ids[0, 0] == 1 and ids[0, n - 1] == 2 and torch.all(ids[0, n:] == 2)
    assert torch.all(mask[0, :n]) and not mask[0, n:].any()
    assert truncated == [False, True] and bool(mask[1].all()) and ids[1, -1] == 2


def test_encode_shapes_and_flags(tiny_pipeline):
    e = tiny_pipeline.encode_text(["A panda eating bamboo.", "一只熊猫在竹林里吃竹子。" * 40])
    preset = get_preset("tiny")
    assert e.llm_states.shape == (2, preset.step_llm.max_length, preset.step_llm.hidden_size)
    assert e.clip_states.shape == (2, 77, preset.clip.hidden_size)
    assert e.clip_states.dtype == torch.float32
    assert e.llm_mask.dtype == torch.bool and e.clip_mask.dtype == torch.bool
    assert e.truncated == [False, True]
    assert e.clip_truncated == [False, True]
    # the same prompt encodes identically alone and in a batch (padding-independent)
    alone = tiny_pipeline.encode_text(["A panda eating bamboo."])
    n = int(alone.llm_mask[0].sum())
    torch.testing.assert_close(alone.llm_states[0, :n], e.llm_states[0, :n], rtol=1e-5, atol=1e-5)


def test_hand_written_bert_weights_match_transformers_names():
    from model.text_encoder import build_clip
    from model.tiny import bert_state_dict

    cfg = get_preset("tiny").clip
    expected = {k: tuple(v.shape) for k, v in build_clip(cfg).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in bert_state_dict(cfg).items()} == expected
