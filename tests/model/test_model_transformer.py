"""DiT pieces against direct formulas: RoPE-3D, timestep sinusoid, text masking, per-head fused layouts, checkpointing."""

import math

import pytest
import torch

from model.presets import get_preset
from model.transformer import StepVideoDiT, apply_rope_3d, rope_3d_cos_sin, timestep_sinusoid


def _tiny_dit(seed=0, **overrides):
    import dataclasses

    cfg = dataclasses.replace(get_preset("tiny").dit, **overrides)
    torch.manual_seed(seed)
    dit = StepVideoDiT(cfg)
    dit.init_weights(zero_out=False)
    return dit.eval()


def _inputs(B=2, F=2, H=3, W=4, L=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F, 4, H, W, generator=g)
    t = torch.rand(B, generator=g)
    llm = torch.randn(B, L, 64, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 6:] = False
    clip = torch.randn(B, 77, 32, generator=g)
    return x, t, llm, mask, clip


def test_rope_matches_direct_formula():
    F, H, W, heads = 2, 3, 4, 2
    split = (64, 32, 32)
    x = torch.randn(1, F * H * W, heads, 128, dtype=torch.float64).float()
    cos, sin = rope_3d_cos_sin(F, H, W, split, 1e4, torch.device("cpu"))
    out = apply_rope_3d(x, cos, sin, split)
    ref = torch.empty_like(x)
    n = 0
    for f in range(F):
        for h in range(H):
            for w in range(W):
                offset = 0
                for pos, d in zip((f, h, w), split, strict=True):
                    for i in range(d // 2):  # pairs (i, i + d/2) rotate by angle pos / 1e4^(2i/d)
                        angle = pos / 1e4 ** (2 * i / d)
                        a, b = x[0, n, :, offset + i], x[0, n, :, offset + i + d // 2]
                        ref[0, n, :, offset + i] = a * math.cos(angle) - b * math.sin(angle)
                        ref[0, n, :, offset + i + d // 2] = b * math.cos(angle) + a * math.sin(angle)
                    offset += d
                n += 1
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_timestep_sinusoid_is_flipped_cos_first():
    t = torch.tensor([0.0, 500.0])
    emb = timestep_sinusoid(t, 256)
    freqs = torch.exp(-math.log(1e4) * torch.arange(128) / 128)
    torch.testing.assert_close(emb[1, :128], torch.cos(500.0 * freqs))
    torch.testing.assert_close(emb[1, 128:], torch.sin(500.0 * freqs))
    assert torch.equal(emb[0, :128], torch.ones(128))


def test_forward_shape_and_scalar_t():
    dit = _tiny_dit()
    x, t, llm, mask, clip = _inputs()
    with torch.no_grad():
        v = dit(x, t, llm, mask, clip)
        v_scalar = dit(x, torch.tensor(0.3), llm, mask, clip)
    assert v.shape == x.shape and v_scalar.shape == x.shape


def test_padded_text_tokens_change_nothing():
    dit = _tiny_dit()
    x, t, llm, mask, clip = _inputs()
    with torch.no_grad():
        ref = dit(x, t, llm, mask, clip)
        # different garbage in the padded positions of sample 0
        llm2 = llm.clone()
        llm2[0, 6:] = torch.randn(4, 64) * 100
        out = dit(x, t, llm2, mask, clip)
        # more padding appended to every sample
        llm3 = torch.cat([llm, torch.randn(2, 7, 64)], dim=1)
        mask3 = torch.cat([mask, torch.zeros(2, 7, dtype=torch.bool)], dim=1)
        out3 = dit(x, t, llm3, mask3, clip)
        # sample 0 alone (its own batch) gives the same result
        out_single = dit(x[:1], t[:1], llm[:1, :6], mask[:1, :6], clip[:1])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out3, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_single, ref[:1], rtol=1e-5, atol=1e-5)
    # and valid tokens do matter
    llm4 = llm.clone()
    llm4[0, :6] += torch.randn(6, 64)  # (a constant shift would be removed by caption_norm)
    with torch.no_grad():
        assert not torch.allclose(dit(x, t, llm4, mask, clip)[0], ref[0], atol=1e-4)


def test_wqkv_rows_are_per_head_interleaved():
    """Zeroing the rows [q_h0 k_h0 v_h0] of head 0 must zero exactly head 0's attention output columns of wo's input."""
    dit = _tiny_dit()
    attn = dit.transformer_blocks[0].attn1
    hd = attn.head_dim
    with torch.no_grad():
        attn.wqkv.weight[2 * hd : 3 * hd] = 0  # v of head 0
    captured = {}
    handle = attn.wo.register_forward_hook(lambda m, inp, out: captured.setdefault("x", inp[0]))
    x, t, llm, mask, clip = _inputs()
    with torch.no_grad():
        dit(x, t, llm, mask, clip)
    handle.remove()
    wo_in = captured["x"]  # (B, N, D), head-major h*hd + d
    assert torch.all(wo_in[..., :hd] == 0)
    assert wo_in[..., hd : 2 * hd].abs().sum() > 0


def test_zero_init_gives_zero_velocity():
    torch.manual_seed(0)
    dit = StepVideoDiT(get_preset("tiny").dit)  # default init_weights(zero_out=True)
    x, t, llm, mask, clip = _inputs()
    with torch.no_grad():
        assert torch.count_nonzero(dit(x, t, llm, mask, clip)) == 0


def test_gradient_checkpointing_gives_same_grads():
    x, t, llm, mask, clip = _inputs()
    grads = []
    for ckpt in (False, True):
        dit = _tiny_dit(gradient_checkpointing=ckpt).train()
        dit(x, t, llm, mask, clip).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in dit.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    assert grads[0].abs().sum() > 0


def test_bf16_forward_runs():
    dit = _tiny_dit().to(torch.bfloat16)
    x, t, llm, mask, clip = _inputs()
    with torch.no_grad():
        v = dit(x, t, llm, mask, clip)
    assert v.dtype == torch.float32 and torch.isfinite(v).all()


def test_bad_rope_split_rejected():
    with pytest.raises(ValueError, match="must sum to attention_head_dim"):
        _tiny_dit(rope_split=(64, 32, 16))
