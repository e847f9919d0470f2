"""Official-release compatibility: VAE eps, derived ffn_dim, the combined text mask, sample(latents=), latent-only
pipelines, decode(mix=False), and the errors bad roots / masks get."""

import json
import logging
import shutil

import pytest
import torch

from model.checkpoint import CheckpointError, load_dit, load_vae, read_dit_config
from model.config import DiTConfig, VAEConfig
from model.pipeline import StepVideoPipeline
from model.presets import get_preset
from model.vae import VideoVAE, mix_chunk_borders

# ---------------------------------------------------------------------------------------------------------------
# Item 1: the VAE GroupNorm eps
# ---------------------------------------------------------------------------------------------------------------


def test_vae_groupnorm_eps_is_the_official_pytorch_default():
    """stepvideo/vae/vae.py (stepfun-ai/Step-Video-T2V) builds every VAE norm without an eps argument:
    ``nn.GroupNorm(num_groups=32, num_channels=in_channels)`` in AttnBlock / Resnet3DBlock / VideoEncoder.norm_out /
    VideoDecoder.norm_out and ``nn.GroupNorm(32, num_filters)`` in Res3DBlockUpsample, so eps is PyTorch's 1e-5."""
    assert VAEConfig().norm_eps == 1e-5 == torch.nn.GroupNorm(32, 64).eps
    with torch.device("meta"):
        vae = VideoVAE(VAEConfig())
    norms = [m for m in vae.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and {m.eps for m in norms} == {1e-5} and {m.num_groups for m in norms} == {32}


def test_official_root_without_vae_config_loads_eps_1e5_and_logs_it(tiny_root, tmp_path, caplog):
    official = tmp_path / "official"
    shutil.copytree(tiny_root / "vae", official / "vae")
    (official / "vae" / "config.json").unlink()  # the official layout has only vae_v2.safetensors
    with caplog.at_level(logging.INFO, logger="model.checkpoint"):
        vae = load_vae(official, get_preset("tiny").vae)
    assert {m.eps for m in vae.modules() if isinstance(m, torch.nn.GroupNorm)} == {1e-5}
    with caplog.at_level(logging.INFO, logger="model.checkpoint"):
        # without any config a root is official: the default (1e-5), named as such in the log
        with pytest.raises(CheckpointError, match=r"vae_v2\.safetensors: .*shape mismatch.*built from no vae/config"
                                                  r"\.json: official default.*config and weights disagree"):
            load_vae(official)  # the tiny weights do not fit the full-size default network
    assert "VAE GroupNorm eps 1e-05 (no vae/config.json: official default)" in caplog.text


def test_root_written_by_this_project_keeps_its_eps(tiny_root, tmp_path, caplog):
    ours = tmp_path / "ours"
    shutil.copytree(tiny_root / "vae", ours / "vae")
    config = json.loads((ours / "vae" / "config.json").read_text())
    config["norm_eps"] = 1e-6  # what this project wrote before the eps was checked
    (ours / "vae" / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.INFO, logger="model.checkpoint"):
        vae = load_vae(ours)
    assert {m.eps for m in vae.modules() if isinstance(m, torch.nn.GroupNorm)} == {1e-6}
    assert "VAE GroupNorm eps 1e-06" in caplog.text and "vae/config.json" in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# Item 2: ffn_dim, masks, latents, latent-only output, unmixed decode
# ---------------------------------------------------------------------------------------------------------------


def test_ffn_dim_is_derived_as_4x_inner_dim_like_the_official_feedforward():
    """Official: ``FeedForward(dim=inner_dim, inner_dim=None, mult=4)`` -> ``dim * mult`` (stepvideo/modules/blocks.py)."""
    assert DiTConfig().ffn_dim == 24576 == 4 * 48 * 128
    assert DiTConfig(num_attention_heads=24, attention_head_dim=128).ffn_dim == 4 * 3072
    assert DiTConfig(ffn_dim=1000).ffn_dim == 1000  # an explicit width (our own config.json) is kept


def test_official_transformer_config_without_ffn_dim_derives_it(tmp_path):
    folder = tmp_path / "transformer"
    folder.mkdir()
    official = {"_class_name": "StepVideoModel", "num_attention_heads": 4, "attention_head_dim": 128,
                "in_channels": 4, "out_channels": 4, "num_layers": 1, "caption_channels": [64, 32],
                "norm_type": "ada_norm_single", "norm_eps": 1e-6, "use_additional_conditions": False,
                "attention_type": "parallel"}
    (folder / "config.json").write_text(json.dumps(official))
    assert read_dit_config(tmp_path).ffn_dim == 4 * 512


def test_config_and_weights_that_disagree_name_the_config_file(tiny_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(tiny_root / "transformer", root / "transformer")
    config = json.loads((root / "transformer" / "config.json").read_text())
    config["ffn_dim"] = 512
    (root / "transformer" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*transformer/config\.json.*ffn_dim 512"):
        load_dit(root, dtype=torch.float32)


@pytest.fixture(scope="module")
def dit_inputs():
    torch.manual_seed(0)
    from model.transformer import StepVideoDiT

    dit = StepVideoDiT(get_preset("tiny").dit).eval()
    dit.init_weights(zero_out=False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 4, 4, generator=g)
    t = torch.tensor([0.2, 0.7])
    llm = torch.randn(2, 10, 64, generator=g)
    llm_mask = torch.zeros(2, 10, dtype=torch.long)
    llm_mask[0, :8], llm_mask[1, :3] = 1, 1
    clip = torch.randn(2, 77, 32, generator=g)
    return dit, x, t, llm, llm_mask, clip


@torch.no_grad()
def test_combined_official_mask_gives_the_same_velocity(dit_inputs):
    dit, x, t, llm, llm_mask, clip = dit_inputs
    y_mask = torch.nn.functional.pad(llm_mask, (77, 0), value=1)  # the official server's y_mask
    separate = dit(x, t, llm, llm_mask, clip)
    combined = dit(x, t, llm, y_mask.float(), clip)  # the official pipeline casts it to the DiT dtype
    assert (separate - combined).abs().max().item() == 0.0
    # only the count of ones is used, as in the official prepare_attn_mask
    scrambled = torch.zeros_like(y_mask)
    for i, n in enumerate(y_mask.sum(1)):
        scrambled[i, torch.randperm(87)[:n]] = 1
    assert (dit(x, t, llm, scrambled, clip) - separate).abs().max().item() == 0.0


@torch.no_grad()
def test_masks_that_do_not_fit_their_text_are_refused_naming_both_sizes(dit_inputs):
    dit, x, t, llm, llm_mask, clip = dit_inputs
    with pytest.raises(ValueError, match=r"llm_mask has length 12 but llm_states has 10 tokens.*77 \+ 10 = 87"):
        dit(x, t, llm, torch.ones(2, 12), clip)
    with pytest.raises(ValueError, match=r"clip_mask has shape \(2, 70\) but clip_states has 77 tokens"):
        dit(x, t, llm, llm_mask, clip, torch.ones(2, 70))
    with pytest.raises(ValueError, match="official combined mask.*pass clip_mask=None"):
        dit(x, t, llm, torch.ones(2, 87), clip, torch.ones(2, 77))
    with pytest.raises(ValueError, match=r"llm_mask must be \(B=2, L\)"):
        dit(x, t, llm, torch.ones(3, 10), clip)


def test_sample_from_given_latents_equals_sample_from_the_seeds_noise(tiny_pipeline):
    from model import flow

    text = tiny_pipeline.encode_text(["a red car"])
    seeded = tiny_pipeline.sample(text, [5, 6], num_steps=3, cfg_scale=1.0)
    noise = flow.batch_noise([5, 6], seeded.shape[1:])
    given = tiny_pipeline.sample(text, latents=noise, num_steps=3, cfg_scale=1.0)
    assert torch.equal(seeded, given)
    with pytest.raises(ValueError, match=r"latents have shape \(3, 4, 4, 4\) per sample, the requested video size "
                                         r"needs \(3, 4, 2, 2\)"):
        tiny_pipeline.sample(text, latents=noise, height=32, width=32, num_steps=1, cfg_scale=1.0)
    with pytest.raises(ValueError, match="latents has batch 2 but 3 seeds"):
        tiny_pipeline.sample(text, [1, 2, 3], latents=noise, num_steps=1, cfg_scale=1.0)
    with pytest.raises(ValueError, match=r"latents must be \(B, t, 4, h, w\)"):
        tiny_pipeline.sample(text, latents=torch.zeros(1, 3, 5, 4, 4), num_steps=1)


def test_latent_only_pipeline_needs_no_vae(tiny_root, tiny_pipeline):
    lean = StepVideoPipeline.from_pretrained(tiny_root, preset="tiny", load_vae=False)
    assert lean.vae is None
    out = lean.generate(["a red car"], [3], num_steps=2, output_type="latent")
    assert out.frames is None and out.latents.shape == (1, 3, 4, 4, 4)
    full = tiny_pipeline.generate(["a red car"], [3], num_steps=2)
    assert torch.equal(out.latents, full.latents)
    with pytest.raises(RuntimeError, match="without a VAE"):
        lean.decode(out.latents)
    with pytest.raises(ValueError, match="output_type must be"):
        lean.generate(["x"], [0], output_type="mp4")


@torch.no_grad()
def test_decode_without_the_border_mix(tiny_pipeline):
    vae = tiny_pipeline.vae
    z = torch.randn(1, 6, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    raw = vae.decode(z, mix=False)
    mixed = vae.decode(z)
    assert torch.equal(mix_chunk_borders(raw, 17, 0.6), mixed)
    assert not torch.equal(raw[:, 16:18], mixed[:, 16:18]) and torch.equal(raw[:, :16], mixed[:, :16])
    frames = tiny_pipeline.decode(z, mix=False)
    assert frames.shape == (1, 34, 32, 32, 3) and frames.dtype == torch.uint8


@torch.no_grad()
def test_decode_tiled_in_time_and_space_into_host_memory(tiny_pipeline):
    vae = tiny_pipeline.vae
    z = torch.randn(1, 6, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    whole = vae.decode(z, chunks_per_batch=None)
    in_time = vae.decode(z, chunks_per_batch=1, out_device="cpu")
    assert (whole - in_time).abs().max().item() <= 1e-5  # the chunks are independent: exact up to rounding
    tiled = vae.decode(z, tile_size=2, tile_stride=1, out_device="cpu")
    assert tiled.shape == whole.shape
