"""Frozen configuration dataclasses for every Step-Video-T2V component.

Field names of :class:`DiTConfig` follow the official ``transformer/config.json`` where a field exists there
(``num_attention_heads``, ``attention_head_dim``, ``in_channels`` ...), so an official config file maps onto it.
Values are the released model's (stepfun-ai/Step-Video-T2V: the report, arXiv 2502.10248, and the official
code); ``docs/model.md`` says what was compared with the official release.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ATTENTION_BACKENDS = ("auto", "fa3", "fa2", "sdpa", "math")


def _from_dict(cls, data: dict[str, Any]):
    """Build a frozen config from a dict, ignoring unknown keys and turning lists into tuples."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            continue
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


@dataclass(frozen=True)
class DiTConfig:
    """The DiT (``StepVideoModel``). Defaults are the released 30B model."""

    num_layers: int = 48
    num_attention_heads: int = 48
    attention_head_dim: int = 128
    in_channels: int = 64
    out_channels: int = 64
    patch_size: int = 1
    caption_channels: tuple[int, int] = (6144, 1024)  # (Step-LLM dim, Hunyuan-CLIP dim)
    # FFN width. None derives it as the official code does: ``StepVideoTransformerBlock`` builds
    # ``FeedForward(dim=inner_dim, inner_dim=None)`` and FeedForward uses ``dim * mult`` with ``mult=4``
    # (stepvideo/modules/blocks.py), so an official config.json (which has no such field) gives 4 x inner_dim.
    ffn_dim: int | None = None
    # RoPE-3D: head_dim split for (frame, height, width); the official ``RoPE3D`` hard-codes [64, 32, 32] (ratio 1/2, 1/4, 1/4).
    rope_split: tuple[int, int, int] = (64, 32, 32)
    rope_theta: float = 10000.0
    block_norm_eps: float = 1e-5  # norm1 / norm2: affine LayerNorm
    final_norm_eps: float = 1e-6  # caption_norm / norm_out: LayerNorm without affine
    qk_norm_eps: float = 1e-6  # RMSNorm(head_dim) on q and k
    timestep_freq_dim: int = 256
    time_rescale: float = 1000.0
    attention_backend: str = "auto"  # auto | fa3 | fa2 | sdpa | math (env STEPVIDEO_ATTENTION overrides)
    gradient_checkpointing: bool = False

    def __post_init__(self):
        if self.ffn_dim is None:
            object.__setattr__(self, "ffn_dim", 4 * self.num_attention_heads * self.attention_head_dim)
        if sum(self.rope_split) != self.attention_head_dim:
            raise ValueError(f"rope_split {self.rope_split} must sum to attention_head_dim {self.attention_head_dim}")
        if any(d % 2 for d in self.rope_split):
            raise ValueError(f"every rope_split entry must be even, got {self.rope_split}")
        if len(self.caption_channels) != 2:
            raise ValueError("caption_channels must be [step_llm_dim, clip_dim]")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class VAEConfig:
    """Video-VAE v2 (``AutoencoderKL(z_channels=64, version=2)``). Defaults are the released VAE."""

    z_channels: int = 64
    in_channels: int = 3
    encoder_ch: int = 32
    encoder_ch_mult: tuple[int, ...] = (4, 8, 16, 16)
    encoder_num_res_blocks: int = 2
    decoder_ch: int = 128
    decoder_ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    decoder_num_res_blocks: int = 3
    norm_groups: int = 32
    # Every official VAE norm is ``nn.GroupNorm(32, C)`` with no eps argument (stepvideo/vae/vae.py: AttnBlock,
    # Resnet3DBlock, VideoEncoder/VideoDecoder.norm_out, Res3DBlockUpsample), i.e. PyTorch's default 1e-5.
    # Roots written by this project before that was checked may say 1e-6 in vae/config.json and keep it.
    norm_eps: float = 1e-5
    frame_len: int = 17  # pixel frames per chunk
    latent_len: int = 3  # latent frames per chunk
    spatial_ratio: int = 16
    mix_weight: float = 0.6  # chunk-border mix: back = 0.6*back + 0.4*front

    @property
    def patch_channels(self) -> int:
        """Channel count of the dual-path bottleneck (2048 for z=64): ``4 * z * 8``."""
        return 4 * self.z_channels * 8

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class StepLLMConfig:
    """Step-LLM text encoder (``Step1Model``). Field names follow ``step_llm/config.json``."""

    hidden_size: int = 6144
    num_layers: int = 48
    num_attention_heads: int = 48
    num_attention_groups: int = 8
    ffn_hidden_size: int = 16896
    layernorm_epsilon: float = 1e-5
    padded_vocab_size: int = 65536
    max_length: int = 320  # tokens fed to the DiT: BOS + 318 + EOS, padded with PAD
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepLLMConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class CLIPConfig:
    """Hunyuan-CLIP text encoder (a ``transformers.BertModel``)."""

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    vocab_size: int = 47020
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_length: int = 77

    def to_bert_kwargs(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": "gelu",
        }


@dataclass(frozen=True)
class SamplerConfig:
    """Flow-matching Euler sampler defaults (the official pipeline's)."""

    num_steps: int = 50
    cfg_scale: float = 9.0
    shift: float = 13.0


# Official prompt magic strings (the official pipeline's): appended to the prompt / used as the negative prompt.
POS_MAGIC = "超高清、HDR 视频、环境光、杜比全景声、画面稳定、流畅动作、逼真的细节、专业级构图、超现实主义、自然、生动、超细节、清晰。"
NEG_MAGIC = "画面暗、低分辨率、不良手、文本、缺少手指、多余的手指、裁剪、低质量、颗粒状、签名、水印、用户名、模糊。"


@dataclass(frozen=True)
class ModelPreset:
    """A named model size plus its default sampling settings."""

    name: str
    dit: DiTConfig
    vae: VAEConfig
    step_llm: StepLLMConfig
    clip: CLIPConfig
    sampler: SamplerConfig
    fps: int = 25
    height: int = 544
    width: int = 992
    num_frames: int = 204
    positive_suffix: str = POS_MAGIC
    negative_prompt: str = NEG_MAGIC
