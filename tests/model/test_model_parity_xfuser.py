"""Parity with an independent implementation: the official Step-Video-T2V DiT block files shipped in ``xfuser`` (xDiT).

xfuser ships ``xfuser/model_executor/models/customized/step_video_t2v/{blocks,attentions,normalization,rope}.py``: the
official StepVideoTransformerBlock (self-attention with 3D RoPE and QK-norm, cross-attention, FFN), AdaLayerNormSingle,
PixArtAlphaTextProjection and PatchEmbed. The same random fp32 weights go into those modules and ours; outputs and
intermediates are compared at atol 1e-5 (relative to the output's scale where values are large).

The ``xfuser`` package itself cannot be imported on a machine without a GPU (``xfuser/envs.py`` raises
NotImplementedError: "No Accelerators ... available", and its ``__init__`` needs triton). These four files need none of
that: they are loaded straight from the installed distribution without running the package ``__init__``. Their only
xfuser imports are ``xfuser.core.long_ctx_attention`` (optional, for the parallel attention type, absent here) and
``get_sequence_parallel_world_size/rank`` (used by RoPE only with ``parallel=True``); the blocks are built with
``attention_type="torch"`` so neither is used, and the stand-in for the latter raises if it ever is.
The top-level StepVideoModel is not in xfuser; it is assembled below from those modules following the official
``stepvideo/modules/model.py`` forward (caption norm -> projection, [CLIP ; LLM], the mask from the count of ones).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.presets import get_preset
from model.transformer import StepVideoDiT, rope_3d_cos_sin

pytestmark = pytest.mark.reference

_FILES = ("normalization", "rope", "attentions", "blocks")
_PACKAGE = "xfuser.model_executor.models.customized.step_video_t2v"


def _load_official_modules() -> dict[str, types.ModuleType]:
    spec = importlib.util.find_spec("xfuser")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("xfuser is not installed (pip install -c constraints.txt xfuser; it is in the dev extra)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_executor/models/customized/step_video_t2v"
    if not all((folder / f"{name}.py").is_file() for name in _FILES):
        pytest.skip(f"this xfuser version has no Step-Video-T2V block files in {folder}")

    def unused(*_):
        raise RuntimeError("sequence-parallel state is not available in this parity test (attention_type='torch')")

    parallel_state = types.ModuleType("xfuser.core.distributed.parallel_state")
    parallel_state.get_sequence_parallel_world_size = unused
    parallel_state.get_sequence_parallel_rank = unused
    temporary = {"xfuser.core.distributed.parallel_state": parallel_state, "xfuser.core.long_ctx_attention": None}
    saved = {name: sys.modules.get(name) for name in [*temporary, *(f"{_PACKAGE}.{n}" for n in _FILES)]}
    modules = {}
    try:
        sys.modules.update(temporary)
        for name in _FILES:
            full = f"{_PACKAGE}.{name}"
            module_spec = importlib.util.spec_from_file_location(f"_official_step_video_{name}", folder / f"{name}.py")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[full] = module  # blocks.py imports its siblings by their xfuser names
            module_spec.loader.exec_module(module)
            modules[name] = module
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
    return modules


@pytest.fixture(scope="module")
def official():
    return _load_official_modules()


@pytest.fixture(scope="module")
def ours():
    torch.manual_seed(0)
    dit = StepVideoDiT(get_preset("tiny").dit).eval()
    dit.init_weights(zero_out=False)
    with torch.no_grad():  # non-trivial norm weights, so a swapped or missing weight shows
        for name, p in dit.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return dit


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(1, max |b|): absolute for values of order 1, relative for larger ones."""
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def _inputs(cfg):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, cfg.in_channels, 4, 6, generator=g)  # (B, F, C, H, W): 72 tokens, non-square
    t = torch.tensor([0.25, 0.9])
    llm = torch.randn(2, 20, cfg.caption_channels[0], generator=g)
    llm_mask = torch.zeros(2, 20, dtype=torch.long)
    llm_mask[0, :13] = 1
    llm_mask[1, :6] = 1
    clip = torch.randn(2, 77, cfg.caption_channels[1], generator=g)
    y_mask = F.pad(llm_mask, (77, 0), value=1)  # the official server's combined mask
    return x, t, llm, llm_mask, clip, y_mask


def _official_block(official, ours, index):
    cfg = ours.cfg
    block = official["blocks"].StepVideoTransformerBlock(
        dim=cfg.inner_dim, attention_head_dim=cfg.attention_head_dim, attention_type="torch"
    )
    block.load_state_dict(ours.transformer_blocks[index].state_dict(), strict=True)
    return block.eval()


def _official_forward(official, ours, x, t, llm, y_mask, clip, trace):
    """The official StepVideoModel.forward, built from xfuser's modules and our weights (strict key match)."""
    cfg, norm = ours.cfg, official["normalization"]
    D = cfg.inner_dim
    adaln = norm.AdaLayerNormSingle(D)
    adaln.load_state_dict(ours.adaln_single.state_dict(), strict=True)
    caption_projection = norm.PixArtAlphaTextProjection(cfg.caption_channels[0], D)
    caption_projection.load_state_dict(ours.caption_projection.state_dict(), strict=True)
    patch = official["blocks"].PatchEmbed(patch_size=1, in_channels=cfg.in_channels, embed_dim=D)
    patch.load_state_dict(ours.pos_embed.state_dict(), strict=True)
    B, Fr, C, H, W = x.shape

    tokens = patch(x.reshape(B * Fr, C, H, W)).reshape(B, Fr * H * W, D)
    t_mod, embedded = adaln(t, added_cond_kwargs={})
    trace["t_mod"] = t_mod
    text = caption_projection(F.layer_norm(llm, (llm.shape[-1],), eps=1e-6))
    text = torch.cat([torch.nn.functional.linear(clip, ours.clip_projection.weight, ours.clip_projection.bias), text], 1)
    kv_lens = y_mask.sum(dim=1).int()
    text = text[:, : int(kv_lens.max())]
    mask = torch.zeros(B, tokens.shape[1], int(kv_lens.max()), dtype=torch.bool)
    for i, n in enumerate(kv_lens):
        mask[i, :, :n] = True
    trace["text"] = text
    for i in range(cfg.num_layers):
        tokens = _official_block(official, ours, i)(tokens, text, timestep=t_mod, attn_mask=mask,
                                                     rope_positions=[Fr, H, W])
        trace[f"block{i}"] = tokens
    tokens = tokens.reshape(B * Fr, H * W, D)
    shift, scale = (ours.scale_shift_table[None] + embedded.repeat_interleave(Fr, 0)[:, None]).chunk(2, dim=1)
    tokens = F.layer_norm(tokens, (D,), eps=1e-6) * (1 + scale) + shift
    out = torch.nn.functional.linear(tokens, ours.proj_out.weight, ours.proj_out.bias)
    return out.reshape(B * Fr, H, W, C).permute(0, 3, 1, 2).reshape(B, Fr, C, H, W)


@torch.no_grad()
def test_self_attention_cross_attention_and_ffn_match_the_official_block(official, ours):
    cfg = ours.cfg
    g = torch.Generator().manual_seed(2)
    D, (Fr, H, W) = cfg.inner_dim, (3, 4, 6)
    x = torch.randn(2, Fr * H * W, D, generator=g)
    text = torch.randn(2, 30, D, generator=g)
    ref = _official_block(official, ours, 0)
    mine = ours.transformer_blocks[0]
    rope = rope_3d_cos_sin(Fr, H, W, cfg.rope_split, cfg.rope_theta, x.device)
    assert _close(mine.attn1(x, rope), ref.attn1(x, rope_positions=[Fr, H, W])) <= 1e-5

    text_mask = torch.ones(2, 30, dtype=torch.bool)
    text_mask[1, 17:] = False
    dense = text_mask[:, None, :].expand(2, x.shape[1], 30)  # the official (B, q_len, kv_len) bool mask
    assert _close(mine.attn2(x, text, text_mask), ref.attn2(x, text, dense)) <= 1e-5
    assert _close(mine.ff(x), ref.ff(x)) <= 1e-5

    t_mod = torch.randn(2, 6 * D, generator=g) * 0.1
    assert _close(mine(x, t_mod, text, text_mask, rope), ref(x, text, timestep=t_mod, attn_mask=dense,
                                                              rope_positions=[Fr, H, W])) <= 1e-5


@torch.no_grad()
def test_qk_rmsnorm_and_rope_match_the_official_modules(official, ours):
    cfg = ours.cfg
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 3 * 4 * 6, cfg.num_attention_heads, cfg.attention_head_dim, generator=g)
    ref_norm = official["normalization"].RMSNorm(cfg.attention_head_dim, elementwise_affine=True)
    ref_norm.load_state_dict(ours.transformer_blocks[0].attn1.q_norm.state_dict())
    assert _close(ours.transformer_blocks[0].attn1.q_norm(q), ref_norm(q)) <= 1e-6

    from model.transformer import apply_rope_3d

    rope = rope_3d_cos_sin(3, 4, 6, cfg.rope_split, cfg.rope_theta, q.device)
    ref_rope = official["rope"].RoPE3D(freq=1e4, F0=1.0, scaling_factor=1.0)
    assert _close(apply_rope_3d(q, *rope, cfg.rope_split), ref_rope(q, [3, 4, 6], list(cfg.rope_split))) <= 1e-5


@torch.no_grad()
def test_whole_dit_matches_the_official_forward_with_the_combined_mask(official, ours):
    x, t, llm, llm_mask, clip, y_mask = _inputs(ours.cfg)
    trace = {}
    ref = _official_forward(official, ours, x, t, llm, y_mask, clip, trace)
    t_mod, _ = ours.adaln_single(t * ours.cfg.time_rescale, torch.float32)
    assert _close(t_mod, trace["t_mod"]) <= 1e-5
    separate = ours(x, t, llm, llm_mask, clip)  # our convention: the LLM mask alone
    combined = ours(x, t, llm, y_mask, clip)  # the official combined mask
    assert _close(separate, ref) <= 1e-5
    assert _close(combined, ref) <= 1e-5
