"""A worker owning N devices: VIDEODPO_GPUS_PER_JOB picks one process or a sequence-parallel group (gloo on CPU)."""

import pytest
import torch.distributed as dist
from django.core.exceptions import ImproperlyConfigured

from generation_workers.parallel import gpus_per_job
from generation_workers.pipeline_cache import PipelineCache


def test_gpus_per_job_is_validated_naming_the_variable(settings):
    assert gpus_per_job() == 1
    for bad in (0, -1):
        settings.VIDEODPO = {**settings.VIDEODPO, "GPUS_PER_JOB": bad}
        with pytest.raises(ValueError, match="VIDEODPO_GPUS_PER_JOB must be a positive integer"):
            gpus_per_job()
    settings.VIDEODPO = {**settings.VIDEODPO, "GPUS_PER_JOB": "two"}
    with pytest.raises(ImproperlyConfigured, match="GPUS_PER_JOB"):
        gpus_per_job()


@pytest.mark.slow
def test_worker_cache_loads_a_two_rank_pipeline_that_samples_like_one_process(settings, tmp_path):
    """The worker's pipeline cache with GPUS_PER_JOB=2: rank 0 in this process, rank 1 launched by it; replacing the
    pipeline stops the ranks and the process group."""
    from model.parallel import ParallelPipeline
    from model.pipeline import StepVideoPipeline
    from model.tiny import write_tiny_checkpoint

    root = write_tiny_checkpoint(tmp_path / "tiny", seed=0)
    single = StepVideoPipeline.from_pretrained(root, preset="tiny", device="cpu")
    settings.VIDEODPO = {**settings.VIDEODPO, "GPUS_PER_JOB": 2, "PIPELINE_FACTORY": ""}
    cache = PipelineCache()
    loaded = cache.get(uri=str(root), preset="tiny", device="cpu")
    parallel = loaded.pipeline
    try:
        assert isinstance(parallel, ParallelPipeline) and parallel.world_size == 2 and dist.get_world_size() == 2
        text = parallel.encode_text(["a dog"])  # rank 0 holds the text encoders
        latents = parallel.sample(text, [4, 5], num_steps=2)
        expected = single.sample(text, [4, 5], num_steps=2)
        assert (latents - expected).abs().max().item() <= 1e-5
        assert parallel.decode(latents).shape == (2, 17, 64, 64, 3)  # and the VAE
    finally:
        cache.clear()
    assert parallel.closed and not dist.is_initialized() and all(c.poll() is not None for c in parallel.children)
