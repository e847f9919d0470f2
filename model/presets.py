"""Named model sizes (like DiT's ``DiT_XL_2``): the released model, its Turbo variant and a CPU-sized ``tiny``.

>>> from model.presets import get_preset
>>> get_preset("tiny").dit.inner_dim
256
"""

from __future__ import annotations

from model.config import CLIPConfig, DiTConfig, ModelPreset, SamplerConfig, StepLLMConfig, VAEConfig

PRESET_NAMES = ("stepvideo-t2v", "stepvideo-t2v-turbo", "tiny")

# Tiny sizes: same code paths and key names, a few million parameters (doc "Facts for a CPU-only tiny test config").
TINY_DIT = DiTConfig(
    num_layers=2,
    num_attention_heads=2,
    attention_head_dim=128,  # keeps the [64, 32, 32] RoPE split of the released model
    in_channels=4,
    out_channels=4,
    caption_channels=(64, 32),
    ffn_dim=1024,
)
TINY_VAE = VAEConfig(
    z_channels=4,
    encoder_ch=32,
    encoder_ch_mult=(1, 1, 1, 1),
    encoder_num_res_blocks=2,
    decoder_ch=32,
    decoder_ch_mult=(1, 1, 1, 1),
    decoder_num_res_blocks=3,
)
TINY_STEP_LLM = StepLLMConfig(
    hidden_size=64,
    num_layers=2,
    num_attention_heads=4,
    num_attention_groups=2,
    ffn_hidden_size=128,
    padded_vocab_size=512,
    max_length=128,
)
TINY_CLIP = CLIPConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    vocab_size=1024,  # model.tiny pads the locally written vocab.txt to exactly this size
    max_position_embeddings=128,
)


def get_preset(name: str) -> ModelPreset:
    """Return the preset called ``name`` (one of :data:`PRESET_NAMES`)."""
    if name == "stepvideo-t2v":
        return ModelPreset(
            name=name,
            dit=DiTConfig(),
            vae=VAEConfig(),
            step_llm=StepLLMConfig(),
            clip=CLIPConfig(),
            sampler=SamplerConfig(num_steps=50, cfg_scale=9.0, shift=13.0),
            fps=25,
            height=544,
            width=992,
            num_frames=204,
        )
    if name == "stepvideo-t2v-turbo":
        # README "Best-of-Practice" for Turbo: 10-15 steps, CFG 5.0, shift 17.0.
        return ModelPreset(
            name=name,
            dit=DiTConfig(),
            vae=VAEConfig(),
            step_llm=StepLLMConfig(),
            clip=CLIPConfig(),
            sampler=SamplerConfig(num_steps=12, cfg_scale=5.0, shift=17.0),
            fps=25,
            height=544,
            width=992,
            num_frames=204,
        )
    if name == "tiny":
        return ModelPreset(
            name=name,
            dit=TINY_DIT,
            vae=TINY_VAE,
            step_llm=TINY_STEP_LLM,
            clip=TINY_CLIP,
            sampler=SamplerConfig(num_steps=8, cfg_scale=5.0, shift=13.0),
            fps=8,
            height=64,
            width=64,
            num_frames=17,
        )
    raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}")
