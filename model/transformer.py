"""Step-Video-T2V DiT (``StepVideoModel``): 48 blocks of AdaLN-single self-attention (3D RoPE), cross-attention to
[Hunyuan-CLIP ; Step-LLM] text tokens and a tanh-GELU FFN. Written from the official release (report and code);
module names reproduce the official state-dict keys (785 tensors, 29,342,478,400 parameters for the released size).

Time convention (docs/contracts.md): ``t = 0`` noise, ``t = 1`` data, the model predicts ``v = x1 - x0`` and takes
``t`` in [0, 1], multiplying it by ``cfg.time_rescale`` (1000) inside.

Numerics: norms, modulation, gated residual adds and RoPE run in fp32 and are cast back to the weight dtype. The
official bf16 quirks (t cast to bf16 before x1000, RoPE angles rounded to bf16, the text-mask
sum rounded in bf16) are deliberately not reproduced; they only matter for bit-parity with official bf16 outputs.

Shapes: B batch, F latent frames, C latent channels, H/W latent height/width, N = F*(H/p)*(W/p) video tokens,
D = heads * head_dim inner width, L text tokens (77 CLIP + L_llm).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from model.attention import attention
from model.config import DiTConfig

# ---------------------------------------------------------------------------------------------------------------
# Small building blocks
# ---------------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learnable weight, computed in fp32 and cast back (QK-norm, Step-LLM)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim) -> (..., dim), same dtype."""
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def layer_norm_fp32(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """Apply ``norm`` in fp32; returns fp32 (callers modulate in fp32 and cast back)."""
    weight = norm.weight.float() if norm.weight is not None else None
    bias = norm.bias.float() if norm.bias is not None else None
    return F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps)


def timestep_sinusoid(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """PixArt/diffusers sinusoid with ``flip_sin_to_cos=True``, ``downscale_freq_shift=0``.

    t: (B,) already rescaled (x1000) -> (B, dim) fp32 ``[cos(t f), sin(t f)]`` with ``f = exp(-ln(1e4) i / (dim/2))``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


def rope_3d_cos_sin(
    frames: int, height: int, width: int, split: tuple[int, int, int], theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for RoPE-3D, fp32, each (N, sum(split)) with N = frames*height*width.

    Token order is (f, h, w) row-major. Chunk i of the head dim (sizes ``split``) uses coordinate i with its own
    spectrum ``inv_freq = 1 / theta^(arange(0, d, 2) / d)`` and the non-interleaved layout ``emb = cat(freqs, freqs)``.
    """
    grids = torch.meshgrid(
        torch.arange(frames, device=device, dtype=torch.float32),
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    positions = [g.reshape(-1) for g in grids]  # 3 x (N,)
    cos, sin = [], []
    for pos, d in zip(positions, split, strict=True):
        inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)  # (d/2,)
        freqs = pos[:, None] * inv_freq[None]  # (N, d/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (N, d)
        cos.append(emb.cos())
        sin.append(emb.sin())
    return torch.cat(cos, dim=-1), torch.cat(sin, dim=-1)  # (N, head_dim) each


def apply_rope_3d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, split: tuple[int, int, int]) -> torch.Tensor:
    """x: (B, N, heads, head_dim); cos/sin: (N, head_dim). Rotation in fp32, result in x's dtype.

    ``out = x*cos + rotate_half(x)*sin`` with ``rotate_half(x) = cat(-x[d/2:], x[:d/2])`` inside each chunk.
    """
    xf = x.float()
    rotated = []
    for chunk in xf.split(list(split), dim=-1):  # (B, N, heads, d)
        first, second = chunk.chunk(2, dim=-1)
        rotated.append(torch.cat([-second, first], dim=-1))
    rot = torch.cat(rotated, dim=-1)  # (B, N, heads, head_dim)
    out = xf * cos[None, :, None, :] + rot * sin[None, :, None, :]
    return out.to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Attention, FFN, block
# ---------------------------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Full 3D self-attention. ``wqkv`` rows are per-head interleaved ``[q_h0 k_h0 v_h0 q_h1 ...]``."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D, hd = cfg.inner_dim, cfg.attention_head_dim
        self.num_heads, self.head_dim = cfg.num_attention_heads, hd
        self.rope_split = cfg.rope_split
        self.backend = cfg.attention_backend
        self.wqkv = nn.Linear(D, 3 * D, bias=False)
        self.wo = nn.Linear(D, D, bias=False)
        self.q_norm = RMSNorm(hd, eps=cfg.qk_norm_eps)
        self.k_norm = RMSNorm(hd, eps=cfg.qk_norm_eps)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], sp=None) -> torch.Tensor:
        """x: (B, N, D); rope: cos/sin (N, head_dim) -> (B, N, D).

        With ``sp`` (a :class:`model.parallel.SequenceParallel`), x and rope hold this rank's N/P tokens and the
        attention runs Ulysses-style across the group.
        """
        B, N, _ = x.shape
        qkv = self.wqkv(x).view(B, N, self.num_heads, 3 * self.head_dim)  # (B, N, heads, 3*hd), per-head [q k v]
        q, k, v = qkv.split(self.head_dim, dim=-1)  # 3 x (B, N, heads, hd)
        q = apply_rope_3d(self.q_norm(q), *rope, self.rope_split)  # QK-norm before RoPE
        k = apply_rope_3d(self.k_norm(k), *rope, self.rope_split)
        if sp is not None:
            out = sp.attention(q, k, v, backend=self.backend)  # (B, N/P, heads, hd)
        else:
            out = attention(q, k, v, backend=self.backend)  # (B, N, heads, hd)
        return self.wo(out.reshape(B, N, -1))  # (B, N, D)


class CrossAttention(nn.Module):
    """Video tokens attend to text tokens. ``wkv`` rows are per-head ``[k_h v_h]``; no RoPE."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D, hd = cfg.inner_dim, cfg.attention_head_dim
        self.num_heads, self.head_dim = cfg.num_attention_heads, hd
        self.backend = cfg.attention_backend
        self.wq = nn.Linear(D, D, bias=False)
        self.wkv = nn.Linear(D, 2 * D, bias=False)
        self.wo = nn.Linear(D, D, bias=False)
        self.q_norm = RMSNorm(hd, eps=cfg.qk_norm_eps)
        self.k_norm = RMSNorm(hd, eps=cfg.qk_norm_eps)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, N, D); text: (B, L, D); text_mask: (B, L) bool (True = valid) or None -> (B, N, D)."""
        B, N, _ = x.shape
        L = text.shape[1]
        q = self.q_norm(self.wq(x).view(B, N, self.num_heads, self.head_dim))  # (B, N, heads, hd)
        kv = self.wkv(text).view(B, L, self.num_heads, 2 * self.head_dim)  # (B, L, heads, 2*hd), per-head [k v]
        k, v = kv.split(self.head_dim, dim=-1)  # 2 x (B, L, heads, hd)
        k = self.k_norm(k)
        out = attention(q, k, v, key_padding_mask=text_mask, backend=self.backend)  # (B, N, heads, hd)
        return self.wo(out.reshape(B, N, -1))


class GELUProj(nn.Module):
    """``Linear`` followed by tanh-approximated GELU (diffusers' ``GELU(approximate="tanh")`` naming: ``.proj``)."""

    def __init__(self, dim_in: int, dim_out: int, bias: bool):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """D -> ffn_dim -> D, tanh-GELU, no biases. Keys ``net.0.proj`` and ``net.2`` (index 1 is the dropout slot)."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.net = nn.ModuleList(
            [GELUProj(dim, ffn_dim, bias=False), nn.Identity(), nn.Linear(ffn_dim, dim, bias=False)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class StepVideoTransformerBlock(nn.Module):
    """One DiT block::

    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = table + t_mod   (this order)
    x = x + gate_msa * SelfAttn(LN1(x) * (1 + scale_msa) + shift_msa)
    x = x + CrossAttn(x, text, mask)            # no norm, no modulation, no gate
    x = x + gate_mlp * FFN(LN2(x) * (1 + scale_mlp) + shift_mlp)
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D = cfg.inner_dim
        self.norm1 = nn.LayerNorm(D, eps=cfg.block_norm_eps, elementwise_affine=True)
        self.attn1 = SelfAttention(cfg)
        self.norm2 = nn.LayerNorm(D, eps=cfg.block_norm_eps, elementwise_affine=True)
        self.attn2 = CrossAttention(cfg)
        self.ff = FeedForward(D, cfg.ffn_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(6, D) / D**0.5)

    def forward(
        self,
        x: torch.Tensor,
        t_mod: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        sp=None,
    ) -> torch.Tensor:
        """x: (B, N, D); t_mod: (B, 6D) fp32; text: (B, L, D); text_mask: (B, L) bool or None -> (B, N, D).

        ``sp``: sequence parallel (x holds this rank's tokens); only the self-attention communicates."""
        B, _, D = x.shape
        # 1. Modulation parameters (fp32): (6, D) + (B, 6, D) -> 6 x (B, 1, D)
        mod = self.scale_shift_table.float()[None] + t_mod.float().view(B, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)

        # 2. Self-attention with AdaLN
        h = (layer_norm_fp32(x, self.norm1) * (1 + scale_msa) + shift_msa).to(x.dtype)  # (B, N, D)
        x = (x.float() + gate_msa * self.attn1(h, rope, sp).float()).to(x.dtype)

        # 3. Cross-attention (no norm, no modulation, no gate)
        x = x + self.attn2(x, text, text_mask)

        # 4. FFN with AdaLN
        h = (layer_norm_fp32(x, self.norm2) * (1 + scale_mlp) + shift_mlp).to(x.dtype)
        x = (x.float() + gate_mlp * self.ff(h).float()).to(x.dtype)
        return x


# ---------------------------------------------------------------------------------------------------------------
# Embedders
# ---------------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Per-frame ``Conv2d(C, D, k=p, s=p)`` (key ``pos_embed.proj``). No absolute position embedding."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_channels, cfg.inner_dim, kernel_size=p, stride=p, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B*F, C, H, W) -> (B*F, H/p * W/p, D)."""
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class _TimestepEmbedderHolder(nn.Module):
    """Holds ``timestep_embedder`` so keys read ``adaln_single.emb.timestep_embedder.*``."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(in_dim, dim)


class AdaLayerNormSingle(nn.Module):
    """PixArt-alpha AdaLN-single: t -> sinusoid(256) -> MLP -> ``embedded`` (B, D) -> ``linear`` -> (B, 6D)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.freq_dim = cfg.timestep_freq_dim
        self.emb = _TimestepEmbedderHolder(cfg.timestep_freq_dim, cfg.inner_dim)
        self.linear = nn.Linear(cfg.inner_dim, 6 * cfg.inner_dim)

    def forward(self, t_scaled: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """t_scaled: (B,) in [0, 1000] -> (t_mod (B, 6D), embedded (B, D)), both in ``dtype``."""
        freq = timestep_sinusoid(t_scaled, self.freq_dim).to(dtype)  # (B, 256)
        embedded = self.emb.timestep_embedder(freq)  # (B, D)
        return self.linear(F.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    """Linear -> tanh-GELU -> Linear, with biases (PixArt text projection)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------


class StepVideoDiT(nn.Module):
    """The Step-Video-T2V DiT. See the module docstring for conventions."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        D, llm_dim, clip_dim = cfg.inner_dim, cfg.caption_channels[0], cfg.caption_channels[1]
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.pos_embed = PatchEmbed(cfg)
        self.adaln_single = AdaLayerNormSingle(cfg)
        self.caption_norm = nn.LayerNorm(llm_dim, eps=cfg.final_norm_eps, elementwise_affine=False)
        self.caption_projection = CaptionProjection(llm_dim, D)
        self.clip_projection = nn.Linear(clip_dim, D)
        self.transformer_blocks = nn.ModuleList([StepVideoTransformerBlock(cfg) for _ in range(cfg.num_layers)])
        self.norm_out = nn.LayerNorm(D, eps=cfg.final_norm_eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(2, D) / D**0.5)
        self.proj_out = nn.Linear(D, cfg.patch_size * cfg.patch_size * cfg.out_channels, bias=True)
        # Sequence parallelism (model.parallel.SequenceParallel) used by forward() when set; None = one process.
        self.sequence_parallel = None
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, zero_out: bool = True, std: float = 0.02) -> None:
        """DiT-style init: xavier Linear/Conv weights, zero biases, tables ~ N(0, 1/D).

        ``zero_out=True`` zero-inits the AdaLN modulation and the output projection (the model starts at v = 0).
        ``zero_out=False`` draws those from N(0, std) instead (random non-trivial models for tests/demos).
        """
        D = self.cfg.inner_dim
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        for linear in (
            self.adaln_single.emb.timestep_embedder.linear_1,
            self.adaln_single.emb.timestep_embedder.linear_2,
        ):
            nn.init.normal_(linear.weight, std=std)
        for table in [self.scale_shift_table] + [b.scale_shift_table for b in self.transformer_blocks]:
            nn.init.normal_(table, std=D**-0.5)
        for linear in (self.adaln_single.linear, self.proj_out):
            if zero_out:
                nn.init.zeros_(linear.weight)
            else:
                nn.init.normal_(linear.weight, std=std)
            nn.init.zeros_(linear.bias)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        llm_states: torch.Tensor,
        llm_mask: torch.Tensor | None,
        clip_states: torch.Tensor,
        clip_mask: torch.Tensor | None = None,
        *,
        sequence_parallel=None,
    ) -> torch.Tensor:
        """Predict the velocity ``v = x1 - x0``.

        Args:
            x: (B, F, C, H, W) noisy latent x_t.
            t: (B,) float in [0, 1] (0 = noise, 1 = data); a scalar is broadcast.
            llm_states: (B, L_llm, caption_channels[0]) Step-LLM hidden states.
            llm_mask: (B, L_llm) bool/int, 1 on BOS..EOS, 0 on padding; or the official combined mask
                (B, L_clip + L_llm) over [CLIP ; LLM] (the official server's ``y_mask``: the LLM mask left-padded with
                L_clip ones), of which, as in the official ``prepare_attn_mask``, only the count of ones is used (the
                first ``sum`` text positions are attended). None attends to every position.
            clip_states: (B, L_clip=77, caption_channels[1]) Hunyuan-CLIP last hidden states.
            clip_mask: (B, L_clip) or None. None (the official behaviour) attends to all 77 CLIP positions. Must be
                None with a combined mask.
            sequence_parallel: a :class:`model.parallel.SequenceParallel` (default ``self.sequence_parallel``): the
                tokens run across its ranks (every rank passes the same inputs and gets the whole output).

        Returns:
            (B, F, C_out, H, W) velocity in x's dtype.
        """
        cfg = self.cfg
        if x.ndim != 5 or x.shape[2] != cfg.in_channels:
            raise ValueError(f"x must be (B, F, {cfg.in_channels}, H, W) latents, got {tuple(x.shape)}")
        B, Fr, C, H, W = x.shape
        p = cfg.patch_size
        if H % p or W % p:
            raise ValueError(f"latent height/width ({H}, {W}) must be multiples of patch_size {p}")
        h, w = H // p, W // p
        sp = self.sequence_parallel if sequence_parallel is None else sequence_parallel
        if sp is not None and sp.world_size == 1:
            sp = None
        if sp is not None:
            sp.check(cfg.num_attention_heads, Fr * h * w)
        dtype = self.proj_out.weight.dtype
        in_dtype = x.dtype

        # 1. Patch embed: (B, F, C, H, W) -> (B*F, C, H, W) -> (B*F, h*w, D) -> (B, F*h*w, D)
        tokens = self.pos_embed(x.to(dtype).reshape(B * Fr, C, H, W))
        tokens = tokens.reshape(B, Fr * h * w, -1)

        # 2. Timestep: t (B,) -> t_mod (B, 6D), embedded (B, D)
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32).reshape(-1).expand(B)
        t_mod, embedded = self.adaln_single(t * cfg.time_rescale, dtype)

        # 3. Text: [CLIP ; LLM] tokens (B, 77 + L_llm, D) and their key-padding mask, trimmed to the longest valid prefix
        llm = self.caption_projection(self.caption_norm(llm_states.float()).to(dtype))  # (B, L_llm, D)
        clip = self.clip_projection(clip_states.to(dtype))  # (B, 77, D)
        text = torch.cat([clip, llm], dim=1)  # (B, L, D), CLIP first
        text_mask = combined_text_mask(llm_mask, clip_mask, B, clip.shape[1], llm.shape[1], x.device)  # (B, L)
        text, text_mask = _trim_text(text, text_mask)

        # 4. Transformer blocks (under sequence parallelism each rank keeps its N/P tokens and RoPE rows)
        rope = rope_3d_cos_sin(Fr, h, w, cfg.rope_split, cfg.rope_theta, x.device)  # 2 x (N, head_dim)
        if sp is not None:
            tokens = sp.shard(tokens, dim=1)  # (B, N/P, D)
            rope = tuple(sp.shard(table, dim=0) for table in rope)  # 2 x (N/P, head_dim)
        for block in self.transformer_blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = torch.utils.checkpoint.checkpoint(
                    block, tokens, t_mod, text, text_mask, rope, sp, use_reentrant=False
                )
            else:
                tokens = block(tokens, t_mod, text, text_mask, rope, sp)

        # 5. Final AdaLN on the raw embedded timestep: (1, 2, D) + (B, 1, D) -> shift, scale (B, 1, D)
        shift, scale = (self.scale_shift_table.float()[None] + embedded.float()[:, None]).chunk(2, dim=1)
        tokens = (layer_norm_fp32(tokens, self.norm_out) * (1 + scale) + shift).to(dtype)
        out = self.proj_out(tokens)  # (B, N, p*p*C_out)
        if sp is not None:
            out = sp.gather(out)  # (B, N/P, p*p*C_out) shards -> (B, N, p*p*C_out)

        # 6. Unpatchify: (B, F*h*w, p*p*C_out) -> (B*F, h, w, p, p, C_out) -> (B*F, C_out, h, p, w, p) -> (B, F, C_out, H, W)
        C_out = cfg.out_channels
        out = out.reshape(B * Fr, h, w, p, p, C_out).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(B, Fr, C_out, H, W)
        return out.to(in_dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def combined_text_mask(
    llm_mask: torch.Tensor | None,
    clip_mask: torch.Tensor | None,
    batch: int,
    clip_len: int,
    llm_len: int,
    device: torch.device,
) -> torch.Tensor:
    """The key-padding mask (B, L_clip + L_llm) bool over [CLIP ; LLM] from either mask convention (see forward).

    Raises ValueError naming both sizes when a mask does not fit its tokens.
    """
    total = clip_len + llm_len
    if llm_mask is None:
        llm_mask = torch.ones(batch, llm_len, dtype=torch.bool, device=device)
    if llm_mask.ndim != 2 or llm_mask.shape[0] != batch:
        raise ValueError(f"llm_mask must be (B={batch}, L), got {tuple(llm_mask.shape)}")
    n = llm_mask.shape[1]
    if n == total and n != llm_len:  # the official combined mask: only its count of ones is used
        if clip_mask is not None:
            raise ValueError(
                f"llm_mask has length {n} = {clip_len} CLIP + {llm_len} LLM tokens (the official combined mask); "
                "pass clip_mask=None with it"
            )
        count = llm_mask.to(device).long().sum(dim=1, keepdim=True)  # (B, 1)
        return torch.arange(total, device=device)[None, :] < count  # (B, L)
    if n != llm_len:
        raise ValueError(
            f"llm_mask has length {n} but llm_states has {llm_len} tokens (or pass the official combined mask of "
            f"length {clip_len} + {llm_len} = {total})"
        )
    if clip_mask is None:
        clip_mask = torch.ones(batch, clip_len, dtype=torch.bool, device=device)
    elif tuple(clip_mask.shape) != (batch, clip_len):
        raise ValueError(
            f"clip_mask has shape {tuple(clip_mask.shape)} but clip_states has {clip_len} tokens (batch {batch})"
        )
    return torch.cat([clip_mask.to(device).bool(), llm_mask.to(device).bool()], dim=1)


def _trim_text(text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Drop trailing positions that no sample attends to; return mask None when every kept position is valid.

    text: (B, L, D), mask: (B, L) bool -> (B, L', D), (B, L') bool or None. Results are unchanged by this
    (masked keys get zero attention weight); it only saves work, like the official ``kv_len`` trimming.
    """
    L = mask.shape[1]
    positions = torch.arange(1, L + 1, device=mask.device)
    keep = int((mask.long() * positions).max())  # index of the last valid key, +1
    keep = max(keep, 1)
    text, mask = text[:, :keep], mask[:, :keep]
    if bool(mask.all()):
        return text, None
    return text, mask
