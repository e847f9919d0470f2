"""Step-Video Video-VAE v2 (``AutoencoderKL(z_channels=64, version=2)``), written from the official
``stepvideo/vae/vae.py`` and the released checkpoint's key list.

Compression 8x16x16 with 64 latent channels. Videos are cut into independent 17-frame chunks, each encoded to 3 latent
frames (1 causal + 8x temporal). Decoding runs 3-latent chunks independently and mixes the two frames at each chunk
border (0.6/0.4). Every GroupNorm is per frame ("spatial GN"); every 3D conv is causal (2 zero frames in front).
The dual path at the end of the encoder / start of the decoder adds a pixel-(un)shuffle + channel averaging/duplicating
shortcut to the conv path.

Layouts: videos (B, T, 3, H, W) in [-1, 1]; latents (B, t, z, h, w) (the DiT's layout); inside the networks
(B, C, T, H, W). No latent scaling or shift.
Rules: T must be 1 or a multiple of 17 (-> t = T/17*3); H and W multiples of 16; t must be 1 or a multiple of 3.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.attention import attention
from model.config import VAEConfig

# ---------------------------------------------------------------------------------------------------------------
# Size rules
# ---------------------------------------------------------------------------------------------------------------


def check_video_size(num_frames: int, height: int, width: int, cfg: VAEConfig | None = None) -> None:
    """Raise ValueError stating the rule when (num_frames, height, width) cannot be encoded/decoded exactly."""
    cfg = cfg or VAEConfig()
    if num_frames < 1 or (num_frames != 1 and num_frames % cfg.frame_len):
        floor = max(num_frames // cfg.frame_len * cfg.frame_len, 1)
        raise ValueError(
            f"num_frames must be 1 or a multiple of {cfg.frame_len} (the VAE encodes {cfg.frame_len}-frame chunks into "
            f"{cfg.latent_len} latent frames); got {num_frames}, use {floor}"
        )
    r = cfg.spatial_ratio
    if height % r or width % r or height < r or width < r:
        raise ValueError(
            f"height and width must be positive multiples of {r} (the VAE's spatial compression); "
            f"got {height}x{width}, use {max(height // r * r, r)}x{max(width // r * r, r)}"
        )


def snap_video_size(num_frames: int, height: int, width: int, cfg: VAEConfig | None = None) -> tuple[int, int, int]:
    """The official pipeline's flooring: frames -> max(T // 17 * 17, 1), H and W -> multiples of 16."""
    cfg = cfg or VAEConfig()
    r = cfg.spatial_ratio
    return max(num_frames // cfg.frame_len * cfg.frame_len, 1), max(height // r * r, r), max(width // r * r, r)


def latent_frames(num_frames: int, cfg: VAEConfig | None = None) -> int:
    """Latent frames for a valid frame count: 17 -> 3, 204 -> 36, 1 -> 1."""
    cfg = cfg or VAEConfig()
    return 1 if num_frames == 1 else num_frames // cfg.frame_len * cfg.latent_len


def pixel_frames(num_latent_frames: int, cfg: VAEConfig | None = None) -> int:
    """Decoded frames for a latent frame count: 3 -> 17, 36 -> 204, 1 -> 1."""
    cfg = cfg or VAEConfig()
    return 1 if num_latent_frames == 1 else num_latent_frames // cfg.latent_len * cfg.frame_len


def latent_shape(num_frames: int, height: int, width: int, cfg: VAEConfig | None = None) -> tuple[int, int, int, int]:
    """(t, z, h, w) of the latent for a video size (validated)."""
    cfg = cfg or VAEConfig()
    check_video_size(num_frames, height, width, cfg)
    r = cfg.spatial_ratio
    return latent_frames(num_frames, cfg), cfg.z_channels, height // r, width // r


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------


def norm_per_frame(
    x: torch.Tensor, norm: nn.GroupNorm, silu: bool = False, slice_elements: int = 2**27
) -> torch.Tensor:
    """GroupNorm with statistics per frame (over C/G x H x W), in fp32, optional SiLU. x: (B, C, T, H, W) -> same.

    Frames are processed in slices of about ``slice_elements`` values to bound the fp32 temporaries on large videos.
    """
    B, C, T, H, W = x.shape
    frames_per_slice = max(1, slice_elements // (B * C * H * W))
    out = torch.empty_like(x)
    weight, bias = norm.weight.float(), norm.bias.float()
    for s in range(0, T, frames_per_slice):
        xs = x[:, :, s : s + frames_per_slice]  # (B, C, ts, H, W)
        ts = xs.shape[2]
        y = xs.transpose(1, 2).reshape(B * ts, C, H, W).float()  # (B*ts, C, H, W)
        y = F.group_norm(y, norm.num_groups, weight, bias, norm.eps)
        if silu:
            y = F.silu(y)
        out[:, :, s : s + ts] = y.reshape(B, ts, C, H, W).transpose(1, 2).to(x.dtype)
    return out


class CausalConv3d(nn.Module):
    """Conv3d with zero padding (t: k-1 front frames, 0 back; h, w: k//2 each side). Holds ``.conv`` (key naming)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.time_pad = kernel_size - 1
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=(0, kernel_size // 2, kernel_size // 2)
        )

    def forward(self, x: torch.Tensor, max_elements: int = 2**30) -> torch.Tensor:
        """x: (B, C, T, H, W) -> (B, C', T', H', W'), T' = (T + k - 1 - k) // stride + 1.

        Stride-1 convs on tensors above ``max_elements`` run in time slices (output frames [a, b) read padded input
        frames [a, b + k - 1)), which keeps every kernel call within 32-bit indexing and bounds the padding copy.
        """
        if x.device.type == "cpu" and torch.is_grad_enabled():  # autograd on (training) on a CPU: oneDNN's conv
            x = x.contiguous(memory_format=torch.channels_last_3d)  # backward is faster channels-last; no_grad paths
            # (the pipelines, parity tests) keep the default layout
        B, C, T, H, W = x.shape
        per_frame_elems = B * max(C, self.conv.out_channels) * H * W
        if self.conv.stride[0] != 1 or per_frame_elems * (T + self.time_pad) <= max_elements:
            if self.time_pad:
                x = F.pad(x, (0, 0, 0, 0, self.time_pad, 0))  # zeros in front (time)
            return self.conv(x)
        step = max(1, max_elements // per_frame_elems - self.time_pad)
        out = None
        for a in range(0, T, step):
            b = min(a + step, T)
            start = a - self.time_pad  # first padded-input frame needed, in unpadded coordinates
            piece = x[:, :, max(start, 0) : b]
            if start < 0:
                piece = F.pad(piece, (0, 0, 0, 0, -start, 0))
            y = self.conv(piece)  # (B, C', b - a, H', W')
            if out is None:
                out = y.new_empty(B, y.shape[1], T, y.shape[3], y.shape[4])
            out[:, :, a:b] = y
        return out


def per_frame(fn, x: torch.Tensor, max_elements: int = 2**28) -> torch.Tensor:
    """Apply a 2D op to every frame: (B, C, T, H, W) -> (B*T, C, H, W) -> fn -> (B, C', T, H', W').

    Frames go through ``fn`` in slices of about ``max_elements`` input values (4x that after a 2x upsample).
    """
    B, C, T, H, W = x.shape
    step = max(1, max_elements // (B * C * H * W))
    outs = []
    for a in range(0, T, step):
        piece = x[:, :, a : a + step]
        t = piece.shape[2]
        y = fn(piece.transpose(1, 2).reshape(B * t, C, H, W))  # (B*t, C', H', W')
        outs.append(y.reshape(B, t, *y.shape[1:]).transpose(1, 2))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


class ResnetBlock3D(nn.Module):
    """h = conv1(SiLU(GN1(x))); h = conv2(SiLU(GN2(h))); out = h + shortcut(x). Per-frame GN, causal convs."""

    def __init__(self, in_channels: int, out_channels: int, cfg: VAEConfig):
        super().__init__()
        self.norm1 = nn.GroupNorm(cfg.norm_groups, in_channels, eps=cfg.norm_eps)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = nn.GroupNorm(cfg.norm_groups, out_channels, eps=cfg.norm_eps)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.nin_shortcut = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(norm_per_frame(x, self.norm1, silu=True))
        h = self.conv2(norm_per_frame(h, self.norm2, silu=True))
        return h + (self.nin_shortcut(x) if self.nin_shortcut is not None else x)


class AttnBlock3D(nn.Module):
    """Single-head causal self-attention over (t h w) raster tokens, 1x1x1 q/k/v/proj_out convs, residual."""

    def __init__(self, channels: int, cfg: VAEConfig):
        super().__init__()
        self.norm = nn.GroupNorm(cfg.norm_groups, channels, eps=cfg.norm_eps)
        self.q = CausalConv3d(channels, channels, 1)
        self.k = CausalConv3d(channels, channels, 1)
        self.v = CausalConv3d(channels, channels, 1)
        self.proj_out = CausalConv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        h = norm_per_frame(x, self.norm)

        def tokens(t: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, T*H*W, 1, C)
            return t.flatten(2).transpose(1, 2)[:, :, None, :]

        out = attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)), causal=True)  # (B, N, 1, C)
        out = out[:, :, 0, :].transpose(1, 2).reshape(B, C, T, H, W)
        return x + self.proj_out(out)


class Downsample2D(nn.Module):
    """Per frame: pad right/bottom by 1 (zeros), Conv2d k3 s2 p0. Key ``downsample.conv`` (a plain Conv2d)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(lambda y: self.conv(F.pad(y, (0, 1, 0, 1))), x)


class Downsample3D(nn.Module):
    """Causal conv k3 with stride 2 in t, h, w: T' = (T + 2 - 3) // 2 + 1 (17 -> 9 -> 5)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    """Per frame: nearest x2, Conv2d k3 p1. Key ``upsample.conv`` (a plain Conv2d)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(lambda y: self.conv(F.interpolate(y, scale_factor=2.0, mode="nearest")), x)


class Res3DBlockUpsample(nn.Module):
    """out = SiLU(GN2(conv2(SiLU(GN1(conv1(x))))) + x) + x (the input is added twice)."""

    def __init__(self, channels: int, cfg: VAEConfig):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, 3)
        self.norm1 = nn.GroupNorm(cfg.norm_groups, channels, eps=cfg.norm_eps)
        self.conv2 = CausalConv3d(channels, channels, 3)
        self.norm2 = nn.GroupNorm(cfg.norm_groups, channels, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = norm_per_frame(self.conv1(x), self.norm1, silu=True)
        h = norm_per_frame(self.conv2(h), self.norm2)
        return F.silu(h + x) + x


class Upsample3D(nn.Module):
    """Nearest x2 on (t, h, w) (in channel slices), then :class:`Res3DBlockUpsample`. T 5 -> 10 -> 20."""

    def __init__(self, channels: int, cfg: VAEConfig):
        super().__init__()
        self.conv3d = Res3DBlockUpsample(channels, cfg)

    def forward(self, x: torch.Tensor, channels_per_slice: int = 64) -> torch.Tensor:
        B, C, T, H, W = x.shape
        up = x.new_empty(B, C, 2 * T, 2 * H, 2 * W)
        for s in range(0, C, channels_per_slice):
            up[:, s : s + channels_per_slice] = F.interpolate(
                x[:, s : s + channels_per_slice], scale_factor=2.0, mode="nearest"
            )
        return self.conv3d(up)


def pixel_unshuffle_3d(x: torch.Tensor, f: int) -> torch.Tensor:
    """Space-to-channel: prepend f-1 zero frames, (B, C, T, H, W) -> (B, C*f^3, (T+f-1)/f, H/f, W/f).

    Channel index = c*f^3 + ft*f^2 + fh*f + fw.
    """
    if f == 1:
        return x
    x = F.pad(x, (0, 0, 0, 0, f - 1, 0))
    B, C, T, H, W = x.shape
    x = x.view(B, C, T // f, f, H // f, f, W // f, f)  # (B, C, T/f, ft, H/f, fh, W/f, fw)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # (B, C, ft, fh, fw, T/f, H/f, W/f)
    return x.reshape(B, C * f**3, T // f, H // f, W // f)


def pixel_shuffle_3d(x: torch.Tensor, f: int) -> torch.Tensor:
    """Channel-to-space, then drop the first f-1 frames: (B, C, T, H, W) -> (B, C/f^3, T*f - (f-1), H*f, W*f)."""
    if f == 1:
        return x
    B, C, T, H, W = x.shape
    x = x.view(B, C // f**3, f, f, f, T, H, W)  # (B, C', ft, fh, fw, T, H, W)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, C', T, ft, H, fh, W, fw)
    x = x.reshape(B, C // f**3, T * f, H * f, W * f)
    return x[:, :, f - 1 :]


def channel_average(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Mean over consecutive groups of C/out channels: (B, C, ...) -> (B, out, ...)."""
    B, C = x.shape[:2]
    return x.view(B, out_channels, C // out_channels, *x.shape[2:]).mean(dim=2)


class ConvPixelUnshuffle3D(nn.Module):
    """Conv path of the encoder's dual path: causal conv then 3D pixel-unshuffle (key ``conv_patchify.conv.conv``)."""

    def __init__(self, in_channels: int, out_channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.conv = CausalConv3d(in_channels, out_channels // factor**3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_unshuffle_3d(self.conv(x), self.factor)


class ConvPixelShuffle3D(nn.Module):
    """Conv path of the decoder's dual path: causal conv then 3D pixel-shuffle (key ``conv_unpatchify.conv.conv``)."""

    def __init__(self, in_channels: int, out_channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.conv = CausalConv3d(in_channels, out_channels * factor**3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), self.factor)


class _Level(nn.Module):
    """One resolution level: ``block`` (res blocks) and an optional ``downsample``/``upsample``."""

    def __init__(self, blocks: list[nn.Module], resample_name: str | None = None, resample: nn.Module | None = None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample_name is not None:
            self.add_module(resample_name, resample)


class _Mid(nn.Module):
    def __init__(self, channels: int, cfg: VAEConfig):
        super().__init__()
        self.block_1 = ResnetBlock3D(channels, channels, cfg)
        self.attn_1 = AttnBlock3D(channels, cfg)
        self.block_2 = ResnetBlock3D(channels, channels, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


# ---------------------------------------------------------------------------------------------------------------
# Encoder / decoder
# ---------------------------------------------------------------------------------------------------------------


class VideoEncoder(nn.Module):
    """(B, 3, 17, H, W) -> moments (B, 2z, 3, H/16, W/16) (mean channels first, then logvar). Doc §2.3."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, mult = cfg.encoder_ch, cfg.encoder_ch_mult
        n = len(mult)
        self.conv_in = CausalConv3d(cfg.in_channels, ch, 3)
        in_mult = (1,) + tuple(mult)
        levels = []
        for i in range(n):
            block_in, block_out = ch * in_mult[i], ch * mult[i]
            blocks = [
                ResnetBlock3D(block_in if j == 0 else block_out, block_out, cfg)
                for j in range(cfg.encoder_num_res_blocks)
            ]
            if i == 0:
                levels.append(_Level(blocks, "downsample", Downsample2D(block_out)))
            elif i < n - 1:
                levels.append(_Level(blocks, "downsample", Downsample3D(block_out)))
            else:
                levels.append(_Level(blocks))
        self.down = nn.ModuleList(levels)
        block_in = ch * mult[-1]
        self.mid = _Mid(block_in, cfg)
        self.norm_out = nn.GroupNorm(cfg.norm_groups, block_in, eps=cfg.norm_eps)
        self.patch_channels, self.out_channels = cfg.patch_channels, 2 * cfg.z_channels
        self.conv_patchify = ConvPixelUnshuffle3D(block_in, cfg.patch_channels, 2)
        self.conv_out = CausalConv3d(cfg.patch_channels, 2 * cfg.z_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. Stem and resolution levels: (B, 3, 17, H, W) -> (B, C, 5, H/8, W/8)
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        # 2. Mid block and output norm
        h = self.mid(h)
        h = norm_per_frame(h, self.norm_out, silu=True)
        # 3. Dual path: conv + unshuffle  (+)  unshuffle + channel averaging -> (B, 4z*8, 3, H/16, W/16)
        h = self.conv_patchify(h) + channel_average(pixel_unshuffle_3d(h, 2), self.patch_channels)
        # 4. Output conv (+) channel averaging -> (B, 2z, 3, H/16, W/16)
        return self.conv_out(h) + channel_average(h, self.out_channels)


class VideoDecoder(nn.Module):
    """(B, z, 3, h, w) -> (B, 3, 17, 16h, 16w) (decoded with ``is_init``: the first 3 frames are dropped). Doc §2.4."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, mult = cfg.decoder_ch, cfg.decoder_ch_mult
        n = len(mult)
        block_in = ch * mult[-1]
        self.z_channels, self.patch_channels, self.block_in = cfg.z_channels, cfg.patch_channels, block_in
        self.conv_in = CausalConv3d(cfg.z_channels, cfg.patch_channels, 3)
        self.conv_unpatchify = ConvPixelShuffle3D(cfg.patch_channels, block_in, 2)
        self.mid = _Mid(block_in, cfg)
        levels: list[nn.Module] = [None] * n  # type: ignore[list-item]
        self.temporal_ups = 0
        for i in reversed(range(n)):
            block_out = ch * mult[i]
            blocks = []
            for _ in range(cfg.decoder_num_res_blocks):
                blocks.append(ResnetBlock3D(block_in, block_out, cfg))
                block_in = block_out
            if i >= n - 2:  # temporal_up_layers = [2, 3] for 4 levels
                levels[i] = _Level(blocks, "upsample", Upsample3D(block_out, cfg))
                self.temporal_ups += 1
            elif i > 0:
                levels[i] = _Level(blocks, "upsample", Upsample2D(block_out))
            else:
                levels[i] = _Level(blocks)
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(cfg.norm_groups, block_in, eps=cfg.norm_eps)
        self.conv_out = CausalConv3d(block_in, cfg.in_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # 1. Dual-path input: conv (+) channel repeat, then conv + shuffle (+) repeat + shuffle: T 3 -> 5, x2 space
        h = self.conv_in(z) + z.repeat_interleave(self.patch_channels // self.z_channels, dim=1)
        repeat = self.block_in * 8 // self.patch_channels
        h = self.conv_unpatchify(h) + pixel_shuffle_3d(h.repeat_interleave(repeat, dim=1), 2)
        # 2. Mid block
        h = self.mid(h)
        # 3. Resolution levels from the deepest: T 5 -> 10 -> 20, space x8
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        # 4. Output: GN + SiLU, causal conv to RGB, drop the first 2^ups - 1 frames (20 -> 17)
        h = self.conv_out(norm_per_frame(h, self.norm_out, silu=True))
        return h[:, :, 2**self.temporal_ups - 1 :]


# ---------------------------------------------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------------------------------------------


class VideoVAE(nn.Module):
    """``encoder`` + ``decoder`` with chunked encode/decode. Keys match ``vae_v2.safetensors`` (after its rename)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VideoEncoder(cfg)
        self.decoder = VideoDecoder(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv_in.conv.weight.dtype

    @torch.no_grad()
    def init_weights(self, std: float | None = None) -> None:
        """Default PyTorch init, optionally rescaled conv weights to N(0, std) (random test models)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.Conv2d)):
                if std is not None:
                    nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def encode_moments(
        self, video: torch.Tensor, chunks_per_batch: int | None = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, T, 3, H, W) in [-1, 1] -> (mean, logvar) each (B, t, z, h, w) fp32; 17-frame chunks, independently.

        ``chunks_per_batch``: chunks run through the encoder together (1 = least memory; None = all at once).
        """
        cfg = self.cfg
        B, T, C, H, W = video.shape
        check_video_size(T, H, W, cfg)
        x = video.to(self.dtype).transpose(1, 2)  # (B, 3, T, H, W)
        chunk = 1 if T == 1 else cfg.frame_len
        n = T // chunk
        # chunks are independent: fold them into the batch, ``chunks_per_batch`` at a time
        x = x.reshape(B, C, n, chunk, H, W).transpose(1, 2).reshape(B * n, C, chunk, H, W)  # (B*n, 3, 17, H, W)
        step = B * (chunks_per_batch or n)
        m = torch.cat([self.encoder(x[s : s + step]).float() for s in range(0, B * n, step)])  # (B*n, 2z, 3, h, w)
        m = m.reshape(B, n, *m.shape[1:]).permute(0, 1, 3, 2, 4, 5).flatten(1, 2)  # (B, t, 2z, h, w)
        mean, logvar = m.chunk(2, dim=2)  # (B, t, z, h, w) each
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(
        self,
        video: torch.Tensor,
        *,
        sample: bool = True,
        generator: torch.Generator | None = None,
        chunks_per_batch: int | None = 1,
    ) -> torch.Tensor:
        """video (B, T, 3, H, W) -> latent (B, t, z, h, w) fp32: the posterior sample (official) or its mean.

        ``generator`` seeds the posterior noise (drawn on the generator's device, then moved).
        """
        mean, logvar = self.encode_moments(video, chunks_per_batch)
        if not sample:
            return mean
        gen_device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32, device=gen_device).to(mean.device)
        return mean + torch.exp(0.5 * logvar) * noise

    def _decode_chunks(
        self, z: torch.Tensor, chunks_per_batch: int | None, out_device: torch.device | str | None = None
    ) -> torch.Tensor:
        """z (B, t, z, h, w) -> (B, T, 3, H, W) fp32 before the border mix: independent 3-latent chunks (time tiles),
        ``chunks_per_batch`` at a time, each written into the output on ``out_device`` (default: z's device)."""
        cfg = self.cfg
        B, t, C, h, w = z.shape
        chunk = 1 if t == 1 else cfg.latent_len
        n = t // chunk
        x = z.to(self.dtype).reshape(B * n, chunk, C, h, w).transpose(1, 2)  # (B*n, z, 3, h, w) chunk-major per sample
        step = B * (chunks_per_batch or n)
        out = None
        for s in range(0, B * n, step):
            frames = self.decoder(x[s : s + step]).float()  # (b, 3, 17, H, W)
            if out is None:
                fl = frames.shape[2]
                out = torch.empty(B * n, fl, 3, *frames.shape[3:], device=out_device or frames.device)
            out[s : s + frames.shape[0]] = frames.transpose(1, 2).to(out.device)  # (b, 17, 3, H, W)
        return out.reshape(B, n * out.shape[1], *out.shape[2:])  # (B, T, 3, H, W)

    def decode(
        self,
        z: torch.Tensor,
        *,
        tile_size: int | None = None,
        tile_stride: int | None = None,
        chunks_per_batch: int | None = 1,
        mix: bool = True,
        out_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """latent (B, t, z, h, w) -> video (B, T, 3, H, W) fp32 in about [-1, 1].

        Memory: decoding is tiled in time (``chunks_per_batch`` 3-latent chunks at a time; 1 = least memory, the
        default; None = all; exact, the chunks are independent) and optionally in space: ``tile_size``/``tile_stride``
        (latent pixels, e.g. 34/16) decode overlapping spatial tiles blended with linear ramps (not bit-identical to
        untiled decoding; the official server does not tile). ``out_device="cpu"`` assembles the output video in
        host memory, so the decoding device holds only one chunk x tile at a time.

        ``mix=False`` returns the frames before the chunk-border mix (:func:`mix_chunk_borders`, applied last).
        """
        cfg = self.cfg
        if z.ndim != 5:
            raise ValueError(f"latent must be (B, t, z, h, w), got shape {tuple(z.shape)}")
        B, t, C, h, w = z.shape
        if C != cfg.z_channels:
            raise ValueError(f"latent has {C} channels, the VAE expects z_channels={cfg.z_channels}")
        if t < 1 or (t != 1 and t % cfg.latent_len):
            raise ValueError(
                f"latent frames must be 1 or a multiple of {cfg.latent_len} (each {cfg.latent_len}-latent chunk decodes "
                f"to {cfg.frame_len} frames); got {t}"
            )
        if tile_size is None or (tile_size >= h and tile_size >= w):
            video = self._decode_chunks(z, chunks_per_batch, out_device)
        else:
            video = self._decode_tiled(z, tile_size, tile_stride or tile_size // 2, chunks_per_batch, out_device)
        if not mix or t == 1:
            return video
        return mix_chunk_borders(video, cfg.frame_len, cfg.mix_weight)  # (B, T, 3, H, W)

    def _decode_tiled(
        self, z: torch.Tensor, tile: int, stride: int, chunks_per_batch: int | None, out_device=None
    ) -> torch.Tensor:
        """Spatial tiles (each decoded in time tiles), blended; before the border mix (it is linear, so the order of
        blending and mixing does not matter)."""
        r = self.cfg.spatial_ratio
        B, t, C, h, w = z.shape
        ys, xs = _tile_starts(h, tile, stride), _tile_starts(w, tile, stride)
        out = weight = None
        for y0 in ys:
            for x0 in xs:
                th, tw = min(tile, h - y0), min(tile, w - x0)
                piece = self._decode_chunks(
                    z[:, :, :, y0 : y0 + th, x0 : x0 + tw], chunks_per_batch, out_device
                )  # (B, T, 3, th*r, tw*r)
                if out is None:
                    out = piece.new_zeros(B, piece.shape[1], 3, h * r, w * r)
                    weight = piece.new_zeros(1, 1, 1, h * r, w * r)
                wy = _ramp(th * r, (tile - stride) * r, y0 > 0, y0 + th < h, piece.device)
                wx = _ramp(tw * r, (tile - stride) * r, x0 > 0, x0 + tw < w, piece.device)
                mask = wy[:, None] * wx[None, :]  # (th*r, tw*r)
                out[..., y0 * r : (y0 + th) * r, x0 * r : (x0 + tw) * r] += piece * mask
                weight[..., y0 * r : (y0 + th) * r, x0 * r : (x0 + tw) * r] += mask
        return out / weight

    def forward(self, video: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Reconstruction: decode(encode(video))."""
        return self.decode(self.encode(video, sample=sample))


def mix_chunk_borders(video: torch.Tensor, frame_len: int, weight: float = 0.6) -> torch.Tensor:
    """Blend the two frames at every chunk border. video (B, T, ...) with T a multiple of ``frame_len``.

    For border k: front = last frame of chunk k, back = first frame of chunk k+1;
    ``back = w*back + (1-w)*front``, then ``front = w*front + (1-w)*back_new``.
    """
    T = video.shape[1]
    video = video.clone()
    for b in range(frame_len, T, frame_len):
        front, back = video[:, b - 1].clone(), video[:, b].clone()
        back = weight * back + (1 - weight) * front
        front = weight * front + (1 - weight) * back
        video[:, b - 1], video[:, b] = front, back
    return video


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def _ramp(n: int, overlap: int, ramp_in: bool, ramp_out: bool, device) -> torch.Tensor:
    """(n,) blend weights: linear ramps over ``overlap`` pixels on sides that overlap a neighbour."""
    w = torch.ones(n, device=device)
    overlap = min(overlap, n)
    if overlap > 0:
        ramp = torch.arange(1, overlap + 1, device=device, dtype=torch.float32) / (overlap + 1)
        if ramp_in:
            w[:overlap] = torch.minimum(w[:overlap], ramp)
        if ramp_out:
            w[n - overlap :] = torch.minimum(w[n - overlap :], ramp.flip(0))
    return w
