"""A generation worker that owns N GPUs: the DiT runs sequence-parallel across them (``model.parallel``).

``VIDEODPO_GPUS_PER_JOB=N`` (setting ``VIDEODPO["GPUS_PER_JOB"]``, default 1) makes the worker's pipeline a
:class:`model.parallel.ParallelPipeline` (``generation_workers.pipeline_cache`` picks :func:`pipeline_factory` when no
other factory is configured): on its first job the worker process becomes rank 0 of a new process group and launches
ranks 1..N-1 as child processes on the next visible GPUs (one process group per worker; give each worker its own N
cards with ``CUDA_VISIBLE_DEVICES``). The worker still takes one job at a time from queue ``gpu``; the children only
follow its ``sample`` calls. They stop when the pipeline cache replaces the pipeline (another checkpoint) or the
worker exits.
"""

from __future__ import annotations

from annotation.conf import videodpo


def gpus_per_job() -> int:
    """``VIDEODPO["GPUS_PER_JOB"]`` (ValueError naming ``VIDEODPO_GPUS_PER_JOB`` unless it is >= 1)."""
    value = videodpo().gpus_per_job
    if value < 1:
        raise ValueError(f"VIDEODPO_GPUS_PER_JOB must be a positive integer, got {value}")
    return value


def pipeline_factory(root, preset: str = "tiny", device: str = "cpu"):
    """``factory(root, preset=, device=)`` for the pipeline cache: one process, or N sequence-parallel ranks."""
    from model.parallel import ParallelPipeline
    from model.pipeline import StepVideoPipeline

    n = gpus_per_job()
    if n == 1:
        return StepVideoPipeline.from_pretrained(root, preset=preset, device=device)
    return ParallelPipeline.launch(root, preset, device=device, world_size=n)
