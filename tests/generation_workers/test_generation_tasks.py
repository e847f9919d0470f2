"""The generation tasks run in this process (``task.apply``) on the tiny model: outputs, determinism, caching,
truncation, cancellation, failures and retries. The real-worker tests are in test_generation_worker.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from annotation import storage
from annotation.models import Candidate, CandidateGroup, Prompt, Round
from annotation.selectors.candidates import round_generation_progress
from annotation.services.candidates import candidates_retry_failed, round_generation_cancel, round_generation_enqueue
from generation_workers import tasks, video
from generation_workers.pipeline_cache import pipeline_cache

pytestmark = pytest.mark.django_db


def run_batches(batches):
    return [tasks.candidates_generate.apply(args=[ids]) for ids in batches]


def local_path(uri: str) -> Path:
    return Path(storage.default_storage.path(storage.key_from_uri(uri)))


def test_round_generates_ready_candidates_with_contract_objects(make_round, no_dispatch, fast_settings, django_capture_on_commit_callbacks):
    r = make_round(n_prompts=1, seeds=2)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    assert sorted(len(b) for b in batches) == [1, 1] and no_dispatch == batches
    results = run_batches(batches)
    assert all(res.successful() for res in results), [res.traceback for res in results]

    cands = list(Candidate.objects.filter(group__round=r).order_by("seed"))
    assert [c.status for c in cands] == ["ready", "ready"]
    for c in cands:
        assert c.attempts == 1 and c.progress_step == c.progress_total == 2 and c.error == ""
        assert c.num_frames == 17 and c.fps == 8 and c.duration_s == pytest.approx(17 / 8)
        mp4 = local_path(c.video_uri)
        info = video.probe(mp4)
        assert (info.codec, info.num_frames, info.fps, info.width, info.height) == ("h264", 17, 8.0, 32, 32)
        assert video.is_faststart(mp4)
        assert local_path(c.poster_uri).stat().st_size > 0 and local_path(c.sprite_uri).stat().st_size > 0
        with safe_open(local_path(c.latent_uri), framework="pt") as f:
            latent, meta = f.get_tensor("latent"), f.metadata()
        assert latent.dtype == torch.bfloat16 and tuple(latent.shape) == (3, 4, 2, 2)  # (F, C, h, w)
        assert meta["seed"] == str(c.seed) and meta["preset"] == "tiny" and meta["num_steps"] == "2"
        assert set(meta) >= {"shape", "seed", "num_steps", "cfg_scale", "shift", "preset", "checkpoint", "vae_version"}
        with safe_open(local_path(c.text_embedding_uri), framework="pt") as f:
            assert f.get_tensor("llm_states").dtype == torch.bfloat16 and f.get_tensor("llm_mask").dtype == torch.int8
            assert f.get_tensor("clip_states").shape[0] == 77 and f.metadata()["truncated"] == "false"
        assert "motion_mean_abs_diff" in c.screening_metrics and "timings_s" in c.screening_metrics["generation"]
    assert cands[0].text_embedding_uri == cands[1].text_embedding_uri  # one per prompt and encoder version
    assert cands[1].screening_metrics["generation"]["text_embeddings_cached"] is True
    assert CandidateGroup.objects.get(round=r).status == "ready"
    r.refresh_from_db()
    assert r.status == Round.Status.ANNOTATING
    progress = round_generation_progress(round_id=r.id)
    assert progress["counts"]["ready"] == 2 and progress["fraction"] == 1.0

    # a redelivered finished job changes nothing
    before = list(Candidate.objects.filter(group__round=r).order_by("id").values())
    keys_before = sorted(storage.object_list(prefix=storage.round_prefix(round_id=r.id)))
    run_batches(batches)
    assert list(Candidate.objects.filter(group__round=r).order_by("id").values()) == before
    assert sorted(storage.object_list(prefix=storage.round_prefix(round_id=r.id))) == keys_before
    assert len(keys_before) == 2 * 4


def test_same_seed_gives_bitwise_same_latent(make_round, no_dispatch, fast_settings, django_capture_on_commit_callbacks, settings):
    settings.VIDEODPO = {**settings.VIDEODPO, "BATCH_SEEDS": True}
    r1 = make_round(n_prompts=1, seeds=2)
    r2 = make_round(n_prompts=1, seeds=2, base_seed=r1.base_seed)
    # same prompt text in both rounds, through a fresh (uncached) prompt row: the cache must not change the result
    Prompt.objects.filter(id=r2.config["prompt_ids"][0]).update(text=Prompt.objects.get(id=r1.config["prompt_ids"][0]).text)
    r2.policy_checkpoint.uri = r1.policy_checkpoint.uri
    for r in (r1, r2):
        with django_capture_on_commit_callbacks(execute=True):
            batches = round_generation_enqueue(round_id=r.id)
        assert [len(b) for b in batches] == [2]  # K seeds of one prompt in one sampling call
        run_batches(batches)

    def latents(r):
        out = {}
        for c in Candidate.objects.filter(group__round=r):
            with safe_open(local_path(c.latent_uri), framework="pt") as f:
                out[c.seed] = f.get_tensor("latent")
        return out

    a, b = latents(r1), latents(r2)
    assert a.keys() == b.keys() == {100, 101}
    for seed in a:
        assert torch.equal(a[seed], b[seed])
    assert not torch.equal(a[100], a[101])


def test_truncated_prompt_is_flagged(make_round, no_dispatch, fast_settings, django_capture_on_commit_callbacks):
    r = make_round(n_prompts=1, seeds=2)
    Prompt.objects.filter(id=r.config["prompt_ids"][0]).update(text="a very long prompt about a red ball " * 20)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    run_batches(batches[:1])
    c = Candidate.objects.get(id=batches[0][0])
    assert c.status == "ready" and c.prompt_truncated is True


def test_cancelled_round_stops_pending_jobs(make_round, no_dispatch, fast_settings, django_capture_on_commit_callbacks):
    r = make_round(n_prompts=1, seeds=2)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    assert round_generation_cancel(round_id=r.id) == 2
    results = run_batches(batches)
    assert all(res.result == {"skipped": ids} for res, ids in zip(results, batches, strict=True))
    assert set(Candidate.objects.filter(group__round=r).values_list("status", flat=True)) == {"cancelled"}
    assert list(storage.object_list(prefix=storage.round_prefix(round_id=r.id))) == []


def test_cancel_during_sampling_stops_at_next_step(make_round, no_dispatch, fast_settings, django_capture_on_commit_callbacks, monkeypatch):
    r = make_round(n_prompts=1, seeds=2, num_steps=4)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    from generation_workers import services

    real = services.ThrottledProgress.__call__

    def progress(self, step, total):
        if step == 2:
            round_generation_cancel(round_id=r.id)
        self._last = float("-inf")  # write every step
        return real(self, step, total)

    monkeypatch.setattr(services.ThrottledProgress, "__call__", progress)
    res = tasks.candidates_generate.apply(args=[batches[0]])
    assert res.result == {"cancelled": batches[0]}
    assert Candidate.objects.get(id=batches[0][0]).status == "cancelled"
    assert list(storage.object_list(prefix=storage.round_prefix(round_id=r.id))) == []


def test_deterministic_error_fails_without_retry_then_researcher_retries(make_round, no_dispatch, fast_settings, django_capture_on_commit_callbacks, monkeypatch, tmp_path, tiny_root):
    r = make_round(n_prompts=1, seeds=2)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    # the checkpoint disappears after launch: a missing file is deterministic
    r.policy_checkpoint.uri = str(tmp_path / "gone")
    r.policy_checkpoint.save()
    pipeline_cache().clear()
    retries = []
    monkeypatch.setattr(tasks.candidates_generate, "retry", lambda **kw: retries.append(kw))
    res = tasks.candidates_generate.apply(args=[batches[0]])
    assert res.failed() and retries == []
    c = Candidate.objects.get(id=batches[0][0])
    assert c.status == "failed" and c.attempts == 1 and "does not exist" in c.error

    r.policy_checkpoint.uri = str(tiny_root)  # the researcher fixes the checkpoint and retries
    r.policy_checkpoint.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert candidates_retry_failed(round_id=r.id) == 1
    assert no_dispatch[-1] == [c.id]
    run_batches([[c.id]])
    c.refresh_from_db()
    assert c.status == "ready" and c.attempts == 2 and c.error == ""


def test_transient_error_is_retried_with_backoff(make_round, no_dispatch, fast_settings, django_capture_on_commit_callbacks, monkeypatch):
    import botocore.exceptions

    from generation_workers import services

    r = make_round(n_prompts=1, seeds=2)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    calls = {"n": 0}
    real = services.candidate_render

    def flaky(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3.invalid")
        return real(**kwargs)

    monkeypatch.setattr(services, "candidate_render", flaky)
    res = tasks.candidates_generate.apply(args=[batches[0]])  # eager apply re-runs the retry in place
    assert res.successful(), res.traceback
    c = Candidate.objects.get(id=batches[0][0])
    assert c.status == "ready" and c.attempts == 2 and calls["n"] == 2


def test_bad_frames_fail_the_candidate_with_a_flag(make_round, no_dispatch, fast_settings, django_capture_on_commit_callbacks, monkeypatch):
    from generation_workers import services

    r = make_round(n_prompts=1, seeds=2)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    monkeypatch.setattr(services, "frames_decode", lambda **kw: (_ for _ in ()).throw(services.StageError("decode", "NaN")))
    tasks.candidates_generate.apply(args=[batches[0]])
    c = Candidate.objects.get(id=batches[0][0])
    assert c.status == "failed" and c.screening_flags == ["decode_failed"] and "NaN" in c.error


def test_pipeline_is_cached_per_process_and_reloaded_on_checkpoint_change(tiny_root, tmp_path, fast_settings):
    from generation_workers.pipeline_cache import PipelineCache

    cache = PipelineCache()
    a = cache.get(uri=str(tiny_root), preset="tiny", device="cpu")
    assert cache.get(uri=str(tiny_root), preset="tiny", device="cpu") is a and cache.loads == 1
    other = tmp_path / "copy"
    import shutil

    shutil.copytree(tiny_root, other)
    b = cache.get(uri=str(other), preset="tiny", device="cpu")
    assert b is not a and cache.loads == 2 and b.encoder_version == a.encoder_version  # same text-encoder files


def test_screening_flags_a_static_video(make_round, no_dispatch, fast_settings, django_capture_on_commit_callbacks, monkeypatch):
    from generation_workers import services

    r = make_round(n_prompts=1, seeds=2)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    frames = np.full((17, 32, 32, 3), 3, np.uint8)
    monkeypatch.setattr(services, "frames_decode", lambda **kw: frames)
    tasks.candidates_generate.apply(args=[batches[0]])
    c = Candidate.objects.get(id=batches[0][0])
    assert c.status == "ready" and set(c.screening_flags) == {"black", "uniform", "static"}
    assert c.screening_metrics["motion_mean_abs_diff"] == 0.0


def test_split_queues_chain_text_sample_decode(make_round, no_dispatch, fast_settings, django_capture_on_commit_callbacks, settings):
    from annotation.services.dispatch import generation_signature

    settings.VIDEODPO = {**settings.VIDEODPO, "SPLIT_QUEUES": True}
    r = make_round(n_prompts=1, seeds=2)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    ids = batches[0]
    sig = generation_signature(ids)
    assert [(t.task, t.options["queue"]) for t in sig.tasks] == [
        ("generation_workers.tasks.candidates_text_encode", "text"),
        ("generation_workers.tasks.candidates_sample", "gpu"),
        ("generation_workers.tasks.candidates_decode", "vae"),
    ]
    assert sig.tasks[0].immutable and sig.tasks[1].immutable and not sig.tasks[2].immutable  # decode gets the ids
    # the three stages, as the chain runs them (each stage hands over through storage)
    assert tasks.candidates_text_encode.apply(args=[ids]).result["cached"] is False
    sampled = tasks.candidates_sample.apply(args=[ids]).result
    assert sampled == ids and Candidate.objects.get(id=ids[0]).status == "running"
    assert tasks.candidates_decode.apply(args=[sampled]).result == {"statuses": {ids[0]: "ready"}}
    c = Candidate.objects.get(id=ids[0])
    assert c.status == "ready" and c.attempts == 1 and video.probe(local_path(c.video_uri)).num_frames == 17
    # a redelivered sample stage finds nothing to take; its decode stage then does nothing
    assert tasks.candidates_sample.apply(args=[ids]).result == []
    assert tasks.candidates_decode.apply(args=[[]]).result == {"skipped": []}


def test_progress_writes_are_throttled(make_round, no_dispatch, django_capture_on_commit_callbacks):
    from annotation.services.candidates import candidate_mark_running
    from generation_workers.errors import CandidateCancelled
    from generation_workers.services import ThrottledProgress

    r = make_round(n_prompts=1, seeds=2)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    ids = [i for b in batches for i in b]
    for i in ids:
        candidate_mark_running(candidate_id=i, total_steps=50)
    # an interval far longer than the loop takes even on a loaded machine (the first write is a database update)
    progress = ThrottledProgress(ids, interval=300)
    for step in range(1, 51):  # 50 fast steps: the first and the last are written
        progress(step, 50)
    assert progress.writes == 2
    assert set(Candidate.objects.filter(id__in=ids).values_list("progress_step", flat=True)) == {50}
    round_generation_cancel(round_id=r.id)
    with pytest.raises(CandidateCancelled):
        progress(50, 50)
