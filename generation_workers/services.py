"""What a generation job does, stage by stage; the tasks in ``tasks.py`` only sequence these and record state.

    job_load -> text_embeddings_ensure -> latents_sample -> latent_store -> frames_decode -> screen -> candidate_render
    (text encoders, cached per prompt)    (DiT, CFG in batch)               (VAE)           (ffmpeg + upload)

Stored objects follow docs/contracts.md: the clean latent as ``latent`` (F, C, h, w) bf16 with string metadata, the text
encoder outputs per prompt and encoder version. Keys come from ``annotation.storage`` (deterministic, so a redone job
overwrites its own objects).
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.db import close_old_connections, connection

from annotation import storage
from annotation.conf import videodpo
from annotation.models import Candidate, CandidateGroup, Checkpoint, Prompt, Round
from annotation.services import candidates as candidate_services
from generation_workers import screening, video
from generation_workers.errors import CandidateCancelled
from generation_workers.pipeline_cache import LoadedPipeline, pipeline_get
from model.layout import VAE_FOLDERS, fingerprint

logger = logging.getLogger(__name__)


# -- timings (the benchmark's split) ----------------------------------------------------------------------------------
@dataclass
class Timings:
    """Seconds spent per stage, summed over a job (or a benchmark run)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


# -- the job ----------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One prompt, one checkpoint, one or more seeds (candidates), re-read from the database."""

    round: Round
    group: CandidateGroup
    prompt: Prompt
    checkpoint: Checkpoint
    candidates: list[Candidate]

    @property
    def seeds(self) -> list[int]:
        return [int(c.seed) for c in self.candidates]


class JobConfigError(ValueError):
    """The ids do not make one job (deterministic)."""


def job_load(candidate_ids: list[int]) -> Job | None:
    """The job for ``candidate_ids`` (one group and checkpoint), or None when none of them exists any more."""
    candidates = list(
        Candidate.objects.filter(id__in=candidate_ids)
        .select_related("group", "group__round", "group__prompt", "checkpoint")
        .order_by("seed", "id")
    )
    if not candidates:
        return None
    keys = {(c.group_id, c.checkpoint_id) for c in candidates}
    if len(keys) != 1:
        raise JobConfigError(f"candidates {candidate_ids} span several groups/checkpoints: {sorted(keys)}")
    first = candidates[0]
    return Job(first.group.round, first.group, first.group.prompt, first.checkpoint, candidates)


def job_pipeline(job: Job) -> LoadedPipeline:
    return pipeline_get(uri=job.checkpoint.uri, preset=job.round.preset)


# -- heartbeat and progress -------------------------------------------------------------------------------------------
class Heartbeat:
    """While a job holds candidates, touch them every ``interval`` seconds from a thread (so a sweep can tell a live
    worker from a dead one even during long VAE decodes that report no steps)."""

    def __init__(self, candidate_ids: list[int], interval: float | None = None):
        self.candidate_ids = list(candidate_ids)
        self.interval = float(interval if interval is not None else videodpo().heartbeat_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="candidate-heartbeat", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    candidate_services.candidate_heartbeat(candidate_ids=self.candidate_ids)
                except Exception:  # noqa: BLE001 - a missed heartbeat is not fatal
                    logger.warning("heartbeat failed", exc_info=True)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ThrottledProgress:
    """``progress(i, n)`` callback for the sampler: writes step i of n at most every ``interval`` seconds (and the last
    step); raises :class:`CandidateCancelled` once none of the candidates is running any more."""

    def __init__(self, candidate_ids: list[int], interval: float | None = None):
        self.candidate_ids = list(candidate_ids)
        self.interval = float(interval if interval is not None else videodpo().progress_interval_s)
        self._last = float("-inf")
        self.writes = 0

    def __call__(self, step: int, total: int) -> None:
        now = time.monotonic()
        if step < total and now - self._last < self.interval:
            return
        self._last = now
        self.writes += 1
        if candidate_services.candidate_progress(candidate_ids=self.candidate_ids, step=step, total=total) == 0:
            raise CandidateCancelled(f"candidates {self.candidate_ids} are no longer running")


# -- text embeddings --------------------------------------------------------------------------------------------------
@dataclass
class StoredText:
    embeddings: Any  # model.text_encoder.TextEmbeddings, batch 1, fp32 states / bool masks
    uri: str
    truncated: bool
    cached: bool


def text_for_prompt(job_or_prompt: Job | Prompt, preset) -> str:
    """What the text encoders read: the prompt plus the preset's positive suffix (the official pipeline's
    ``pos_magic``) unless ``VIDEODPO["POSITIVE_SUFFIX"]`` is False."""
    prompt = job_or_prompt.prompt if isinstance(job_or_prompt, Job) else job_or_prompt
    suffix = preset.positive_suffix if videodpo().positive_suffix else ""
    return prompt.text + suffix


def encoder_version(loaded: LoadedPipeline) -> str:
    """The cache key of a prompt's embeddings: the text encoders' fingerprint, and whether the suffix is appended."""
    return loaded.encoder_version + ("" if videodpo().positive_suffix else "-nosuffix")


def text_embeddings_ensure(*, loaded: LoadedPipeline, prompt: Prompt, timings: Timings | None = None) -> StoredText:
    """The prompt's embeddings from storage, or encoded now and stored. Either way the tensors the sampler gets are
    the stored (bf16-rounded) ones, so a candidate does not depend on whether the cache was warm."""
    from model.text_encoder import text_embeddings_from_bytes, text_embeddings_to_bytes

    timings = timings or Timings()
    version = encoder_version(loaded)
    key = storage.text_embedding_key(prompt_id=prompt.id, encoder_version=version)
    with timings.stage("upload"):
        data = storage.object_read(key=key) if storage.object_exists(key=key) else None
    cached = data is not None
    if data is None:
        with timings.stage("text_encoding"):
            emb = loaded.pipeline.encode_text([text_for_prompt(prompt, loaded.pipeline.preset)])
            data = text_embeddings_to_bytes(emb, version=version)
        with timings.stage("upload"):
            storage.object_save(key=key, data=data)
    emb, metadata = text_embeddings_from_bytes(data)
    return StoredText(emb, storage.uri_for(key), metadata.get("truncated") == "true", cached)


# -- sampling ---------------------------------------------------------------------------------------------------------
def latents_sample(*, loaded: LoadedPipeline, job: Job, text: StoredText, candidates: list[Candidate] | None = None,
                   progress=None, timings: Timings | None = None):
    """Denoise the job's seeds in one batch (CFG doubles the batch inside the pipeline) -> (B, F, C, h, w) fp32 CPU."""
    timings = timings or Timings()
    candidates = candidates if candidates is not None else job.candidates
    r = job.round
    pipeline = loaded.pipeline
    negative = None
    if r.cfg_scale != 1.0:
        with timings.stage("text_encoding"):
            negative = loaded.negative(pipeline.preset.negative_prompt)
    with timings.stage("denoising"):
        latents = pipeline.sample(
            text.embeddings, [int(c.seed) for c in candidates], num_frames=r.num_frames, height=r.height,
            width=r.width, num_steps=r.num_steps, cfg_scale=r.cfg_scale, shift=r.shift, negative=negative,
            progress=progress,
        )
        _synchronize(latents)
    return latents.float().cpu()


def _synchronize(tensor) -> None:
    if getattr(tensor, "is_cuda", False):
        import torch

        torch.cuda.synchronize(tensor.device)


def latent_metadata(*, job: Job, candidate: Candidate, latent, vae_version: str) -> dict[str, str]:
    r = job.round
    return {
        "shape": ",".join(str(s) for s in latent.shape), "seed": str(candidate.seed), "num_steps": str(r.num_steps),
        "cfg_scale": repr(float(r.cfg_scale)), "shift": repr(float(r.shift)), "preset": r.preset,
        "checkpoint": job.checkpoint.uri, "vae_version": vae_version,
        # ours, beyond the contract: what else a reader may want to join on
        "candidate": str(candidate.id), "round": str(r.id), "prompt": str(job.prompt.id),
        "num_frames": str(r.num_frames), "height": str(r.height), "width": str(r.width),
    }


def vae_version(loaded: LoadedPipeline) -> str:
    if not hasattr(loaded, "_vae_version"):
        loaded._vae_version = getattr(loaded.pipeline, "vae_version", None) or (
            f"{loaded.preset}-{fingerprint(loaded.root, VAE_FOLDERS)}"
        )
    return loaded._vae_version


def latent_to_bytes(latent, metadata: dict[str, str]) -> bytes:
    import torch
    from safetensors.torch import save

    if latent.ndim != 4:
        raise ValueError(f"a stored latent is (F, C, h, w), got shape {tuple(latent.shape)}")
    return save({"latent": latent.detach().to("cpu", torch.bfloat16).contiguous()}, metadata=metadata)


def latent_store(*, job: Job, candidate: Candidate, latent, loaded: LoadedPipeline, timings: Timings | None = None) -> str:
    timings = timings or Timings()
    key = storage.candidate_key(round_id=job.round.id, group_id=job.group.id, candidate_id=candidate.id,
                                filename="latent.safetensors")
    data = latent_to_bytes(latent, latent_metadata(job=job, candidate=candidate, latent=latent,
                                                   vae_version=vae_version(loaded)))
    with timings.stage("upload"):
        return storage.object_save(key=key, data=data)


def latent_load(*, job: Job, candidate: Candidate):
    """A stored latent back as (F, C, h, w) fp32 (the split-queue VAE stage decodes from it)."""
    from safetensors.torch import load

    key = storage.candidate_key(round_id=job.round.id, group_id=job.group.id, candidate_id=candidate.id,
                                filename="latent.safetensors")
    return load(storage.object_read(key=key))["latent"].float()


# -- decoding, screening, encoding ------------------------------------------------------------------------------------
class StageError(RuntimeError):
    """A candidate failed in ``stage`` (``decode`` or ``encode``): fail that candidate with a screening flag."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


def frames_decode(*, loaded: LoadedPipeline, latent, job: Job, timings: Timings | None = None) -> np.ndarray:
    """One latent (F, C, h, w) -> uint8 frames (T, H, W, 3); a NaN latent or a wrong frame shape is a decode failure."""
    import torch

    timings = timings or Timings()
    if not torch.isfinite(latent).all():
        raise StageError("decode", "the sampled latent has NaN/inf values")
    with timings.stage("decoding"):
        frames = loaded.pipeline.decode(latent[None])[0]  # (T, H, W, 3) uint8
    frames = frames.cpu().numpy() if hasattr(frames, "cpu") else np.asarray(frames)
    r = job.round
    if frames.shape != (r.num_frames, r.height, r.width, 3) or frames.dtype != np.uint8:
        raise StageError("decode", f"decoded frames {frames.shape} {frames.dtype}, expected "
                                   f"({r.num_frames}, {r.height}, {r.width}, 3) uint8")
    return frames


@dataclass
class Rendered:
    video_uri: str
    poster_uri: str
    sprite_uri: str
    info: video.VideoInfo
    sprite_layout: dict


def candidate_render(*, job: Job, candidate: Candidate, frames: np.ndarray, timings: Timings | None = None) -> Rendered:
    """Encode the MP4, poster and sprite into a temporary folder, check the MP4 reads back, upload the three."""
    timings = timings or Timings()
    fps = int(job.round.fps)

    def key(name: str) -> str:
        return storage.candidate_key(round_id=job.round.id, group_id=job.group.id, candidate_id=candidate.id,
                                     filename=name)

    with tempfile.TemporaryDirectory(prefix=f"candidate-{candidate.id}-") as tmp:
        tmp = Path(tmp)
        with timings.stage("ffmpeg"):
            try:
                mp4 = video.encode_mp4(frames, tmp / "video.mp4", fps=fps, preset=videodpo().x264_preset,
                                       crf=videodpo().x264_crf)
                info = video.probe(mp4)
            except video.VideoEncodeError as exc:
                raise StageError("encode", str(exc)) from exc
            if info.codec != "h264" or info.num_frames != len(frames) or not video.is_faststart(mp4):
                raise StageError("encode", f"the encoded MP4 reads back as {info} (faststart "
                                           f"{video.is_faststart(mp4)}), expected {len(frames)} h264 frames")
            poster = video.write_poster(frames, tmp / "poster.jpg")
            layout = video.write_sprite(frames, tmp / "sprite.jpg")
        with timings.stage("upload"):
            video_uri = storage.object_save_file(key=key("video.mp4"), path=mp4, content_type="video/mp4")
            poster_uri = storage.object_save_file(key=key("poster.jpg"), path=poster, content_type="image/jpeg")
            sprite_uri = storage.object_save_file(key=key("sprite.jpg"), path=tmp / "sprite.jpg", content_type="image/jpeg")
    return Rendered(video_uri, poster_uri, sprite_uri, info, layout.as_dict())


def candidate_finish(*, loaded: LoadedPipeline, job: Job, candidate: Candidate, latent, text: StoredText,
                     timings: Timings | None = None, latent_uri: str | None = None) -> str:
    """Store the latent, decode, screen, encode and upload one candidate, recording ``encoded`` then ``ready``.

    A decode/encode failure fails this candidate only (flag ``decode_failed``/``encode_failed``); other errors
    propagate to the task. Returns the candidate's final status."""
    timings = timings or Timings()
    job_timings = Timings()
    try:
        latent_uri = latent_uri or latent_store(job=job, candidate=candidate, latent=latent, loaded=loaded, timings=job_timings)
        frames = frames_decode(loaded=loaded, latent=latent, job=job, timings=job_timings)
        flags, metrics = screening.screen_frames(frames, screening.ScreeningThresholds.from_settings())
        rendered = candidate_render(job=job, candidate=candidate, frames=frames, timings=job_timings)
    except StageError as exc:
        _merge(timings, job_timings)
        logger.warning("candidate %s failed at %s: %s", candidate.id, exc.stage, exc)
        candidate_services.candidate_mark_failed(candidate_id=candidate.id, error=f"{exc.stage}: {exc}",
                                                 flags=[screening.failure_flag(exc.stage)])
        return Candidate.Status.FAILED
    _merge(timings, job_timings)
    if not candidate_services.candidate_mark_encoded(
        candidate_id=candidate.id, video_uri=rendered.video_uri, poster_uri=rendered.poster_uri,
        sprite_uri=rendered.sprite_uri, duration_s=round(rendered.info.num_frames / rendered.info.fps, 4),
        num_frames=rendered.info.num_frames, fps=rendered.info.fps, sprite_layout=rendered.sprite_layout,
    ):
        status = Candidate.objects.values_list("status", flat=True).get(id=candidate.id)
        if status == Candidate.Status.CANCELLED:  # cancelled while we encoded: leave nothing behind
            candidate_objects_delete(job=job, candidate=candidate)
        return status
    metrics["generation"] = {
        "timings_s": job_timings.as_dict(), "worker": socket.gethostname(), "device": loaded.device,
        "encoder_version": encoder_version(loaded), "text_embeddings_cached": text.cached,
        "video": {"codec": rendered.info.codec, "width": rendered.info.width, "height": rendered.info.height,
                  "pix_fmt": rendered.info.pix_fmt},
    }
    candidate_services.candidate_mark_ready(
        candidate_id=candidate.id, latent_uri=latent_uri, text_embedding_uri=text.uri, screening_flags=flags,
        screening_metrics=metrics, prompt_truncated=text.truncated,
    )
    return Candidate.Status.READY


def _merge(into: Timings, other: Timings) -> None:
    for k, v in other.seconds.items():
        into.seconds[k] += v


CANDIDATE_FILES = ("video.mp4", "poster.jpg", "sprite.jpg", "latent.safetensors")


def candidate_objects_delete(*, job: Job, candidate: Candidate) -> None:
    for name in CANDIDATE_FILES:
        storage.object_delete(key=storage.candidate_key(round_id=job.round.id, group_id=job.group.id,
                                                        candidate_id=candidate.id, filename=name))
