"""A worker owning N devices: VIDEODPO_GPUS_PER_JOB picks one process or a sequence-parallel group (gloo on CPU)."""

import pytest
import torch.distributed as dist

from generation_workers.parallel import gpus_per_job, pipeline_factory


def test_gpus_per_job_is_validated_naming_the_variable(monkeypatch):
    monkeypatch.delenv("VIDEODPO_GPUS_PER_JOB", raising=False)
    assert gpus_per_job() == 1
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("VIDEODPO_GPUS_PER_JOB", bad)
        with pytest.raises(ValueError, match="VIDEODPO_GPUS_PER_JOB must be a positive integer"):
            gpus_per_job()


@pytest.mark.slow
def test_factory_gives_a_two_rank_pipeline_that_samples_like_one_process(monkeypatch, tmp_path):
    from model.pipeline import StepVideoPipeline
    from model.tiny import write_tiny_checkpoint

    root = write_tiny_checkpoint(tmp_path / "tiny", seed=0)
    monkeypatch.setenv("VIDEODPO_GPUS_PER_JOB", "1")
    single = pipeline_factory(root, preset="tiny", device="cpu")
    assert isinstance(single, StepVideoPipeline)
    monkeypatch.setenv("VIDEODPO_GPUS_PER_JOB", "2")
    parallel = pipeline_factory(root, preset="tiny", device="cpu")
    try:
        assert parallel.world_size == 2 and dist.get_world_size() == 2
        text = parallel.encode_text(["a dog"])  # rank 0 holds the text encoders
        latents = parallel.sample(text, [4, 5], num_steps=2)
        expected = single.sample(text, [4, 5], num_steps=2)
        assert (latents - expected).abs().max().item() <= 1e-5
        assert parallel.decode(latents).shape == (2, 17, 64, 64, 3)  # and the VAE
    finally:
        parallel.close()
    assert not dist.is_initialized() and all(c.poll() is not None for c in parallel.children)
