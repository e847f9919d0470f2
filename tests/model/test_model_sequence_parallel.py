"""Sequence-parallel DiT (model/parallel.py): 2 gloo processes give what 1 process gives, for sampling and gradients."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.parallel import ParallelPipeline, SequenceParallel, SequenceParallelError, check_sequence_parallel
from model.presets import get_preset
from model.transformer import StepVideoDiT


def test_world_size_must_divide_heads_and_tokens():
    with pytest.raises(SequenceParallelError, match=r"world size 3 does not divide the DiT's 2 attention heads"):
        check_sequence_parallel(3, 2)
    with pytest.raises(SequenceParallelError, match=r"world size 4 does not divide the 30 video tokens"):
        check_sequence_parallel(4, 48, 30)
    check_sequence_parallel(8, 48, 36 * 34 * 62)  # the released model at 204x544x992 on 8 GPUs


def test_launch_refuses_a_world_size_that_does_not_divide_the_heads(tiny_root):
    with pytest.raises(SequenceParallelError, match="world size 3 does not divide the DiT's 2 attention heads"):
        ParallelPipeline.launch(tiny_root, "tiny", device="cpu", world_size=3)
    assert not dist.is_initialized()  # refused before any process or group was started


@pytest.mark.slow
def test_sequence_parallel_pipeline_two_gloo_ranks_equal_one_process(tiny_root, tiny_pipeline):
    """The worker path: rank 0 here, rank 1 a child process; tiny preset, CFG on, 3 seeds; latents <= 1e-5."""
    text = tiny_pipeline.encode_text(["a cat on a sunny windowsill"])
    negative = tiny_pipeline.encode_text([tiny_pipeline.preset.negative_prompt])
    seeds = [0, 1, 2]
    single = tiny_pipeline.sample(text, seeds, negative=negative, num_steps=4)
    with ParallelPipeline.launch(tiny_root, "tiny", device="cpu", world_size=2) as parallel:
        with pytest.raises(SequenceParallelError, match="does not divide the 3 video tokens"):
            parallel.sample(text, seeds=None, latents=torch.zeros(1, 1, 4, 1, 3), num_steps=1)  # refused up front
        steps = []
        two = parallel.sample(text, seeds, num_steps=4, progress=lambda i, n: steps.append(i))  # negative encoded once
        assert steps == [1, 2, 3, 4]
        again = parallel.sample(text, seeds[:1], negative=negative, num_steps=4)  # the ranks serve the next job
    assert not dist.is_initialized()
    assert two.shape == single.shape == (3, 3, 4, 4, 4)
    assert (two - single).abs().max().item() <= 1e-5
    assert (again[0] - single[0]).abs().max().item() <= 1e-5


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_inputs():
    g = torch.Generator().manual_seed(3)
    cfg = get_preset("tiny").dit
    x = torch.randn(2, 3, cfg.in_channels, 4, 4, generator=g)
    t = torch.tensor([0.3, 0.8])
    llm = torch.randn(2, 12, cfg.caption_channels[0], generator=g)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False
    clip = torch.randn(2, 77, cfg.caption_channels[1], generator=g)
    return x, t, llm, mask, clip


def _model():
    torch.manual_seed(0)
    dit = StepVideoDiT(get_preset("tiny").dit)
    dit.init_weights(zero_out=False)
    return dit


def _grad_worker(rank: int, port: int, out_dir: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        dit = _model()
        x, t, llm, mask, clip = _tiny_inputs()
        weight = torch.linspace(-1, 1, x.numel()).reshape(x.shape)
        v = dit(x, t, llm, mask, clip, sequence_parallel=SequenceParallel())  # (B, F, C, H, W), whole on every rank
        (v * weight).sum().backward()
        grads = {}
        for name, p in dit.named_parameters():
            g = p.grad.clone()
            dist.all_reduce(g)  # each rank holds its tokens' share of the gradient
            grads[name] = g
        if rank == 0:
            torch.save({"v": v.detach(), "grads": grads}, os.path.join(out_dir, "parallel.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sequence_parallel_forward_and_gradients_equal_one_process(tmp_path):
    """The trainer's path: forward and backward under 2 gloo ranks match one process (parameter grads summed)."""
    mp.spawn(_grad_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    parallel = torch.load(tmp_path / "parallel.pt")
    dit = _model()
    x, t, llm, mask, clip = _tiny_inputs()
    v = dit(x, t, llm, mask, clip)
    (v * torch.linspace(-1, 1, x.numel()).reshape(x.shape)).sum().backward()
    assert (parallel["v"] - v.detach()).abs().max().item() <= 1e-5
    worst = max((parallel["grads"][n] - p.grad).abs().max().item() / (p.grad.abs().max().item() + 1e-12)
                for n, p in dit.named_parameters())
    assert worst <= 1e-5
