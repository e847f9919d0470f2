"""End to end on the tiny model root: prompts + seeds -> uint8 frames, latents and text embeddings."""

import json
import time

import pytest
import torch

from model import flow
from model.presets import get_preset


def test_generate_tiny(tiny_pipeline):
    steps = []
    out = tiny_pipeline.generate(
        ["A cat sleeping."], seeds=[0, 1], num_steps=3, progress=lambda i, n: steps.append((i, n))
    )
    p = get_preset("tiny")
    assert out.frames.shape == (2, p.num_frames, p.height, p.width, 3) and out.frames.dtype == torch.uint8
    assert out.latents.shape == (2, 3, 4, p.height // 16, p.width // 16) and out.latents.dtype == torch.float32
    assert out.text.llm_states.shape[0] == 1 and out.negative is not None
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert not torch.equal(out.latents[0], out.latents[1])
    assert out.fps == p.fps


def test_same_seed_same_latent_and_batch_independent(tiny_pipeline):
    text = tiny_pipeline.encode_text(["A red car."])
    kw = dict(num_frames=17, height=32, width=32, num_steps=2)
    a = tiny_pipeline.sample(text, [5], **kw)
    b = tiny_pipeline.sample(text, [7, 5], **kw)
    torch.testing.assert_close(a[0], b[1], rtol=1e-5, atol=1e-5)


def test_sample_without_cfg_starts_from_documented_noise(tiny_pipeline):
    text = tiny_pipeline.encode_text(["x"])
    # zero steps are not allowed; one step from t=0 to 1 is x0 + v(x0, 0)
    x = tiny_pipeline.sample(text, [3], num_frames=1, height=16, width=16, num_steps=1, cfg_scale=1.0)
    x0 = flow.initial_noise(3, (1, 4, 1, 1))
    with torch.no_grad():
        v = tiny_pipeline.dit(x0[None], torch.zeros(1), text.llm_states, text.llm_mask, text.clip_states)
    torch.testing.assert_close(x, x0[None] + v, rtol=1e-5, atol=1e-5)


def test_bad_frame_count(tiny_pipeline):
    text = tiny_pipeline.encode_text(["x"])
    with pytest.raises(ValueError, match="num_frames must be 1 or a multiple of 17"):
        tiny_pipeline.sample(text, [0], num_frames=20, num_steps=1)
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny_pipeline.sample(text, [0], height=40, num_steps=1)


def test_cli_make_tiny_and_info(tmp_path, capsys):
    from model.__main__ import main

    start = time.perf_counter()
    assert main(["make-tiny", "--out", str(tmp_path / "t"), "--seed", "1"]) == 0
    assert time.perf_counter() - start < 30  # < 10 s on an idle machine; slack for shared CI cores
    assert (tmp_path / "t" / "transformer" / "config.json").is_file()
    capsys.readouterr()
    assert main(["info", "--preset", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"dit", "vae", "step_llm", "clip"}
    assert info["dit"]["keys"]["proj_out.weight"] == [4, 256]
    assert info["dit"]["params"] == sum(torch.Size(s).numel() for s in info["dit"]["keys"].values())


def test_make_tiny_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    from model.tiny import write_tiny_checkpoint

    a = write_tiny_checkpoint(tmp_path / "a", seed=0)
    b = write_tiny_checkpoint(tmp_path / "b", seed=0)
    for rel in ("vae/vae_v2.safetensors", "transformer/diffusion_pytorch_model-00001-of-00003.safetensors"):
        sa, sb = load_file(str(a / rel)), load_file(str(b / rel))
        assert all(torch.equal(sa[k], sb[k]) for k in sa), rel


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_pipeline_on_cuda_matches_cpu(tiny_root, tiny_pipeline):
    from model.pipeline import StepVideoPipeline

    gpu = StepVideoPipeline.from_pretrained(tiny_root, preset="tiny", device="cuda", dtype=torch.float32)
    text = tiny_pipeline.encode_text(["A red car."])
    kw = dict(num_frames=17, height=32, width=32, num_steps=2, cfg_scale=1.0)
    cpu_latents = tiny_pipeline.sample(text, [5], **kw)
    gpu_latents = gpu.sample(text, [5], **kw).cpu()
    torch.testing.assert_close(gpu_latents, cpu_latents, rtol=1e-3, atol=1e-3)
    assert gpu.decode(gpu_latents.cuda()).shape == (1, 17, 32, 32, 3)
