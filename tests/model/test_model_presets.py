"""Full-size presets built on the meta device have exactly the official keys and shapes; tiny runs on CPU."""

import re
from pathlib import Path

import pytest
import torch

from model.info import build_meta_components
from model.presets import PRESET_NAMES, get_preset

KEYS_FILE = Path(__file__).with_name(
    "step_video_vae_v2_keys.txt"
)  # the tensor names of the released vae_v2.safetensors


@pytest.fixture(scope="module")
def full():
    return build_meta_components("stepvideo-t2v")


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_preset_names_and_sampler_defaults():
    assert set(PRESET_NAMES) == {"stepvideo-t2v", "stepvideo-t2v-turbo", "tiny"}
    base, turbo, tiny = (get_preset(n) for n in ("stepvideo-t2v", "stepvideo-t2v-turbo", "tiny"))
    assert (base.sampler.num_steps, base.sampler.cfg_scale, base.sampler.shift) == (50, 9.0, 13.0)
    assert (turbo.sampler.num_steps, turbo.sampler.cfg_scale, turbo.sampler.shift) == (12, 5.0, 17.0)
    assert turbo.dit == base.dit and turbo.vae == base.vae
    assert tiny.vae.z_channels == tiny.dit.in_channels == tiny.dit.out_channels
    assert tiny.dit.caption_channels == (tiny.step_llm.hidden_size, tiny.clip.hidden_size)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")


def test_full_dit_keys_shapes_and_count(full):
    shapes = _shapes(full["dit"])
    assert len(shapes) == 785
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 29_342_478_400
    expected = {
        "pos_embed.proj.weight": (6144, 64, 1, 1),
        "adaln_single.emb.timestep_embedder.linear_1.weight": (6144, 256),
        "adaln_single.emb.timestep_embedder.linear_2.weight": (6144, 6144),
        "adaln_single.linear.weight": (36864, 6144),
        "caption_projection.linear_1.weight": (6144, 6144),
        "caption_projection.linear_2.bias": (6144,),
        "clip_projection.weight": (6144, 1024),
        "transformer_blocks.47.scale_shift_table": (6, 6144),
        "transformer_blocks.0.norm1.bias": (6144,),
        "transformer_blocks.0.attn1.wqkv.weight": (18432, 6144),
        "transformer_blocks.0.attn1.wo.weight": (6144, 6144),
        "transformer_blocks.0.attn1.q_norm.weight": (128,),
        "transformer_blocks.0.attn2.wkv.weight": (12288, 6144),
        "transformer_blocks.0.attn2.k_norm.weight": (128,),
        "transformer_blocks.0.ff.net.0.proj.weight": (24576, 6144),
        "transformer_blocks.0.ff.net.2.weight": (6144, 24576),
        "scale_shift_table": (2, 6144),
        "proj_out.weight": (64, 6144),
        "proj_out.bias": (64,),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    per_block = {re.sub(r"^transformer_blocks\.\d+\.", "", k) for k in shapes if k.startswith("transformer_blocks.")}
    assert len(per_block) == 16  # 785 = 17 globals + 48 * 16
    assert not any("caption_norm" in k or "norm_out" in k or "embedder" in k and "timestep" not in k for k in shapes)


def test_full_vae_matches_keys_file(full):
    expected = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split(" ", 1)
        expected[key] = tuple(int(x) for x in re.findall(r"\d+", shape))
    shapes = _shapes(full["vae"])
    assert shapes == expected
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 498_818_819


def test_full_step_llm_keys(full):
    shapes = _shapes(full["step_llm"])
    assert len(shapes) == 1 + 48 * 6
    assert shapes["tok_embeddings.word_embeddings.weight"] == (65536, 6144)
    for i in (0, 47):
        p = f"transformer.layers.{i}."
        assert shapes[p + "attention.wqkv.weight"] == (8192, 6144)
        assert shapes[p + "attention.wo.weight"] == (6144, 6144)
        assert shapes[p + "feed_forward.w1.weight"] == (33792, 6144)
        assert shapes[p + "feed_forward.w2.weight"] == (6144, 16896)
        assert shapes[p + "attention_norm.weight"] == (6144,)
        assert shapes[p + "ffn_norm.weight"] == (6144,)
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 19_579_600_896


def test_full_clip_is_bert_large_sized(full):
    shapes = _shapes(full["clip"])
    assert shapes["embeddings.word_embeddings.weight"] == (47020, 1024)
    assert shapes["encoder.layer.23.output.dense.weight"] == (1024, 4096)


def test_tiny_dit_forward_shapes():
    from model.transformer import StepVideoDiT

    cfg = get_preset("tiny").dit
    torch.manual_seed(0)
    dit = StepVideoDiT(cfg)
    dit.init_weights(zero_out=False)
    assert 1_000_000 < dit.num_parameters() < 10_000_000
    x = torch.randn(2, 3, cfg.in_channels, 4, 6)
    v = dit(
        x, torch.tensor([0.0, 0.5]), torch.randn(2, 12, 64), torch.ones(2, 12, dtype=torch.bool), torch.randn(2, 5, 32)
    )
    assert v.shape == (2, 3, cfg.out_channels, 4, 6)
    assert torch.isfinite(v).all()


def test_presets_import_without_torch():
    """The web app reads presets (names, sizes, defaults) without paying for torch."""
    import subprocess
    import sys

    code = "import sys, model.presets; assert 'torch' not in sys.modules, 'model.presets imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
