"""Attention backends agree with the plain-math reference; unavailable backends fail clearly."""

import pytest
import torch

from model.attention import AttentionBackendError, attention, resolve_backend


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize(
    "case",
    ["plain", "padding_mask", "causal", "gqa_causal_bias", "cross_lengths"],
)
def test_sdpa_matches_math_fp32(case):
    g = torch.Generator().manual_seed(0)
    B, Nq, Nk, H, Hk, D = 2, 24, 24, 4, 4, 32
    kwargs = {}
    if case == "cross_lengths":
        Nk = 9
    if case in ("padding_mask", "cross_lengths"):
        mask = torch.ones(B, Nk, dtype=torch.bool)
        mask[1, Nk // 2 :] = False
        kwargs["key_padding_mask"] = mask
    if case == "causal":
        kwargs["causal"] = True
    if case == "gqa_causal_bias":
        Hk = 2
        kwargs["causal"] = True
        kwargs["bias"] = -torch.rand(1, H, Nq, Nk, generator=g)
    q = torch.randn(B, Nq, H, D, generator=g)
    k = torch.randn(B, Nk, Hk, D, generator=g)
    v = torch.randn(B, Nk, Hk, D, generator=g)
    out_sdpa = attention(q, k, v, backend="sdpa", **kwargs)
    out_math = attention(q, k, v, backend="math", **kwargs)
    assert out_sdpa.shape == (B, Nq, H, D)
    err = _rel_err(out_sdpa, out_math)
    assert err < 1e-5, f"rel err {err:.2e}, max abs diff {(out_sdpa - out_math).abs().max():.2e}"


def test_math_masks_padded_keys():
    q = torch.randn(1, 3, 2, 8)
    k = torch.randn(1, 5, 2, 8)
    v = torch.randn(1, 5, 2, 8)
    mask = torch.tensor([[True, True, True, False, False]])
    ref = attention(q, k[:, :3], v[:, :3], backend="math")
    out = attention(q, k, v, key_padding_mask=mask, backend="math")
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("name", ["fa2", "fa3"])
def test_flash_backend_on_cpu_raises_clear_error(name):
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(AttentionBackendError, match=f"attention backend '{name}' was requested"):
        attention(q, q, q, backend=name)


def test_env_var_overrides_config(monkeypatch):
    q = torch.randn(1, 4, 2, 8)
    monkeypatch.setenv("STEPVIDEO_ATTENTION", "math")
    assert resolve_backend("sdpa", q) == "math"
    monkeypatch.setenv("STEPVIDEO_ATTENTION", "bogus")
    with pytest.raises(AttentionBackendError, match="unknown attention backend 'bogus'"):
        resolve_backend("auto", q)
    monkeypatch.delenv("STEPVIDEO_ATTENTION")
    assert resolve_backend("auto", q) == "sdpa"  # CPU: auto never picks flash-attn


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_flash_matches_sdpa_on_gpu():
    from model.attention import backend_available

    names = [n for n in ("fa3", "fa2") if backend_available(n)]
    if not names:
        pytest.skip("flash-attn not installed")
    g = torch.Generator("cuda").manual_seed(0)
    q = torch.randn(2, 256, 4, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(2, 40, 4, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    mask = torch.ones(2, 40, dtype=torch.bool, device="cuda")
    mask[0, 25:] = False
    ref = attention(q.float(), k.float(), k.float(), key_padding_mask=mask, backend="math")
    for name in names:
        out = attention(q, k, k, key_padding_mask=mask, backend=name)
        assert _rel_err(out.float(), ref) < 2e-2, name
