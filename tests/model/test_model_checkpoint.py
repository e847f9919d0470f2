"""Official-layout checkpoints: sharded save/load round trip (strict) and clear errors."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from model.checkpoint import CheckpointError, load_dit, load_vae, save_dit
from model.presets import get_preset
from model.transformer import StepVideoDiT


@pytest.fixture
def tiny_dit():
    torch.manual_seed(0)
    dit = StepVideoDiT(get_preset("tiny").dit)
    dit.init_weights(zero_out=False)
    return dit.eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, 3, 4, 2, 2, generator=g),
        torch.tensor([0.4]),
        torch.randn(1, 6, 64, generator=g),
        torch.ones(1, 6, dtype=torch.bool),
        torch.randn(1, 77, 32, generator=g),
    )


def test_save_then_load_sharded_strict(tmp_path, tiny_dit):
    folder = save_dit(tiny_dit, tmp_path, tiny_dit.cfg, max_shard_bytes=3 * 1024**2)
    shards = sorted(p.name for p in folder.glob("diffusion_pytorch_model-*.safetensors"))
    assert len(shards) >= 3 and shards[0] == f"diffusion_pytorch_model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tiny_dit.state_dict())
    config = json.loads((folder / "config.json").read_text())
    assert config["num_attention_heads"] == 2 and config["caption_channels"] == [64, 32]
    assert config["_class_name"] == "StepVideoModel" and "attention_backend" not in config

    loaded = load_dit(tmp_path, dtype=torch.float32)  # cfg from config.json
    assert loaded.cfg == tiny_dit.cfg
    for key, value in tiny_dit.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        torch.testing.assert_close(loaded(*_inputs()), tiny_dit(*_inputs()))
    # the transformer folder itself is accepted too, and dtype casting works
    assert next(load_dit(folder, dtype=torch.bfloat16).parameters()).dtype == torch.bfloat16


def test_missing_key_names_file_and_key(tmp_path, tiny_dit):
    state = tiny_dit.state_dict()
    state.pop("proj_out.bias")
    save_dit(state, tmp_path, tiny_dit.cfg)
    with pytest.raises(CheckpointError, match=r"index\.json: 1 missing key\(s\): \['proj_out\.bias'\]"):
        load_dit(tmp_path)


def test_unexpected_key(tmp_path, tiny_dit):
    state = dict(tiny_dit.state_dict())
    state["resolution_embedder.weight"] = torch.zeros(3)
    save_dit(state, tmp_path, tiny_dit.cfg)
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\): \['resolution_embedder\.weight'\]"):
        load_dit(tmp_path)
    loaded = load_dit(tmp_path, strict=False, dtype=torch.float32)  # non-strict ignores it
    assert torch.equal(loaded.proj_out.bias, tiny_dit.proj_out.bias)


def test_shape_mismatch(tmp_path, tiny_dit):
    state = dict(tiny_dit.state_dict())
    state["proj_out.bias"] = torch.zeros(5)
    save_dit(state, tmp_path, tiny_dit.cfg)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*proj_out\.bias: checkpoint \(5,\) vs model \(4,\)"):
        load_dit(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="transformer config not found"):
        load_dit(tmp_path / "nowhere")


def test_vae_file_uses_official_conv_out_name(tiny_root, tmp_path):
    path = tiny_root / "vae" / "vae_v2.safetensors"
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert "decoder.conv_out.weight" in keys and "decoder.conv_out.conv.weight" not in keys
    vae = load_vae(tiny_root)
    assert "decoder.conv_out.conv.weight" in vae.state_dict()
    # a file without the rename target fails strictly, naming the file
    state = load_file(str(path))
    state.pop("decoder.conv_out.bias")
    bad = tmp_path / "vae_v2.safetensors"
    save_file(state, str(bad))
    with pytest.raises(
        CheckpointError, match=r"vae_v2\.safetensors: 1 missing key\(s\): \['decoder\.conv_out\.conv\.bias'\]"
    ):
        load_vae(bad, get_preset("tiny").vae)


def test_tiny_root_layout(tiny_root):
    expected = [
        "model_index.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        "vae/vae_v2.safetensors",
        "step_llm/config.json",
        "step_llm/model.safetensors.index.json",
        "step_llm/step1_chat_tokenizer.model",
        "hunyuan_clip/clip_text_encoder/config.json",
        "hunyuan_clip/clip_text_encoder/pytorch_model.bin",
        "hunyuan_clip/tokenizer/vocab.txt",
    ]
    for rel in expected:
        assert (tiny_root / rel).is_file(), rel
    assert len(list((tiny_root / "transformer").glob("diffusion_pytorch_model-0000*-of-0000*.safetensors"))) > 1
    assert len(list((tiny_root / "step_llm").glob("model-0000*-of-0000*.safetensors"))) > 1
