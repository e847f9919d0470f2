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
def test_worker_cache_loads_a_two_rank_pipeline_that_samples_like_one_process(settings, tiny_root):
    """The worker's pipeline cache with GPUS_PER_JOB=2: rank 0 in this process, rank 1 launched by it; replacing the
    pipeline stops the ranks and the process group."""
    from model.parallel import ParallelPipeline
    from model.pipeline import StepVideoPipeline
    root = tiny_root
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


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker", ["embedded"], indirect=True)  # the broker is not what this test is about
def test_real_worker_with_two_gpus_per_job_makes_the_same_candidates(broker, start_worker, make_round, tmp_path):
    """A celery worker with VIDEODPO_GPUS_PER_JOB=2 (gloo on the CPU) generates a round through its process group;
    a one-process worker generating the same prompt and seeds stores the same latents."""
    from safetensors.torch import load_file

    from annotation import storage
    from annotation.models import Candidate, Round
    from annotation.services.candidates import round_generation_enqueue
    from tests.generation_workers.test_generation_worker import all_ready, wait_for

    latents = {}
    first = make_round(n_prompts=1, seeds=2)
    second = make_round(n_prompts=1, seeds=2)
    Round.objects.filter(id=second.id).update(config=first.config)  # same prompt, same base seed
    for r, gpus in ((first, "2"), (second, "1")):
        worker = start_worker(queues="gpu", extra_env={**broker, "VIDEODPO_GPUS_PER_JOB": gpus})
        round_generation_enqueue(round_id=r.id)
        wait_for(r.id, all_ready(2), workers=[worker])
        log = worker.log_path.read_text()
        assert ("sequence-parallel pipeline on 2 ranks" in log) == (gpus == "2")
        worker.stop()
        for c in Candidate.objects.filter(group__round=r):
            path = storage.object_download(key=storage.key_from_uri(c.latent_uri), path=tmp_path / f"{c.id}.st")
            latents[(gpus, c.seed)] = load_file(path)["latent"]
    assert sorted(latents) == sorted((g, s) for g in ("1", "2") for s in (100, 101))
    for seed in (100, 101):
        # the two process groups reduce in another order, so the fp32 sums may differ in their last bits; stored in
        # bf16, such a value can round to the neighbouring bf16 number: at most one bf16 step (2^-7 relative, 8
        # significant bits) and on a few elements only (2 or 2%); anything else is a real difference
        two, one = latents[("2", seed)].float(), latents[("1", seed)].float()
        diff = (two - one).abs()
        one_step = one.abs() * 2.0**-7 + 1e-30
        assert bool((diff <= one_step).all()), f"seed {seed}: max difference {diff.max().item():.3g}"
        differ = int((diff > 0).sum().item())
        assert differ <= max(2, diff.numel() // 50), f"seed {seed}: {differ} of {diff.numel()} elements differ"
