"""End to end with real worker processes, the S3-compatible server and both brokers: a tiny round of 2 prompts x 3
seeds becomes 6 ready, playable candidates; a SIGKILLed worker's job is redone by the next one without duplicates."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import boto3
import pytest
from safetensors import safe_open

from annotation import storage
from annotation.models import Candidate, CandidateGroup, Round
from annotation.selectors.candidates import round_generation_progress
from annotation.services.candidates import round_generation_enqueue
from generation_workers import video

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FILES = ("latent.safetensors", "poster.jpg", "sprite.jpg", "video.mp4")


def upload_root(root: Path, s3_server: dict, bucket: str, prefix: str) -> str:
    """Copy a local model root to ``s3://bucket/prefix`` (a checkpoint stored in object storage)."""
    client = boto3.client("s3", endpoint_url=s3_server["endpoint_url"], aws_access_key_id=s3_server["access_key"],
                          aws_secret_access_key=s3_server["secret_key"], region_name=s3_server["region_name"])
    for path in root.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root)}")
    return f"s3://{bucket}/{prefix}"


def wait_for(round_id: int, predicate, *, timeout: float = 240.0, workers=()) -> dict:
    deadline = time.monotonic() + timeout
    progress = {}
    while time.monotonic() < deadline:
        progress = round_generation_progress(round_id=round_id)
        if predicate(progress):
            return progress
        for w in workers:
            if w.proc.poll() is not None:
                raise AssertionError(f"worker died:\n{w.log_path.read_text()[-4000:]}")
        time.sleep(0.3)
    logs = "\n".join(w.log_path.read_text()[-3000:] for w in workers)
    raise AssertionError(f"timed out; progress {progress}\n{logs}")


def all_ready(n):
    return lambda p: p["counts"]["ready"] == n


def check_candidate_objects(r: Round, tmp_path: Path) -> None:
    for c in Candidate.objects.filter(group__round=r):
        assert c.video_uri.startswith("s3://") and c.latent_uri.startswith("s3://")
        mp4 = storage.object_download(key=storage.key_from_uri(c.video_uri), path=tmp_path / f"{c.id}.mp4")
        info = video.probe(mp4)
        assert (info.codec, info.num_frames, info.fps, info.pix_fmt) == ("h264", r.num_frames, float(r.fps), "yuv420p")
        atoms = video.mp4_top_level_atoms(mp4)
        assert atoms.index("moov") < atoms.index("mdat"), atoms
        for uri in (c.poster_uri, c.sprite_uri):
            assert storage.object_read(key=storage.key_from_uri(uri))[:2] == b"\xff\xd8"  # JPEG
        latent_path = storage.object_download(key=storage.key_from_uri(c.latent_uri), path=tmp_path / f"{c.id}.st")
        with safe_open(latent_path, framework="pt") as f:
            assert tuple(f.get_tensor("latent").shape) == (3, 4, r.height // 16, r.width // 16)
            assert f.metadata()["seed"] == str(c.seed)


def expected_keys(r: Round) -> set[str]:
    return {
        storage.candidate_key(round_id=r.id, group_id=c.group_id, candidate_id=c.id, filename=name)
        for c in Candidate.objects.filter(group__round=r) for name in FILES
    }


def test_worker_generates_a_round_end_to_end(broker, s3_storage, s3_server, start_worker, make_round, tiny_root, tmp_path):
    # the checkpoint lives in object storage: the worker downloads it into its model cache
    uri = upload_root(tiny_root, s3_server, s3_storage, "checkpoints/tiny")
    worker = start_worker(queues="gpu", extra_env={**broker, "TEST_MODEL_CACHE_DIR": str(tmp_path / "cache")})
    r = make_round(n_prompts=2, seeds=3, uri=uri)
    round_generation_enqueue(round_id=r.id)
    started = time.monotonic()
    progress = wait_for(r.id, all_ready(6), workers=[worker])
    elapsed = time.monotonic() - started

    assert progress["total"] == 6 and progress["fraction"] == 1.0
    assert Candidate.objects.filter(group__round=r).count() == 6
    assert set(CandidateGroup.objects.filter(round=r).values_list("status", flat=True)) == {"ready"}
    r.refresh_from_db()
    assert r.status == Round.Status.ANNOTATING
    check_candidate_objects(r, tmp_path)
    assert set(storage.object_list(prefix=storage.round_prefix(round_id=r.id))) == expected_keys(r)
    assert len(list(storage.object_list(prefix="prompts/"))) == 2  # one text-embedding file per prompt
    assert (tmp_path / "cache" / "s3" / s3_storage / "checkpoints" / "tiny" / "transformer" / "config.json").is_file()
    log = worker.log_path.read_text()
    assert log.count("loaded pipeline") == 1, "one pipeline load per worker process"
    print(f"6 candidates in {elapsed:.1f}s")


def test_sigkilled_worker_job_is_redone_without_duplicates(broker, s3_storage, start_worker, make_round, tmp_path):
    recovery = {"TEST_STALE_RUNNING_S": "2", "TEST_HEARTBEAT_S": "0.3"}
    first = start_worker(queues="gpu", extra_env={**broker, **recovery})
    r = make_round(n_prompts=2, seeds=3, num_steps=3)
    round_generation_enqueue(round_id=r.id)
    # kill mid-job: once a candidate is ready (objects exist) and the next one is running. The worker is frozen
    # (SIGSTOP) before the running candidates are read, so that none of them can move on between the read and the kill
    while True:
        wait_for(r.id, lambda p: p["counts"]["ready"] >= 1 and p["counts"]["running"] >= 1, workers=[first])
        os.killpg(first.proc.pid, signal.SIGSTOP)
        killed = list(Candidate.objects.filter(group__round=r, status="running").values_list("id", flat=True))
        if killed:
            break
        os.killpg(first.proc.pid, signal.SIGCONT)  # it finished that candidate just before the stop: try the next
    first.kill()
    assert killed, "the worker died holding a running candidate"
    time.sleep(2.5)  # the dead worker's heartbeat goes stale

    second = start_worker(queues="gpu", extra_env={**broker, **recovery})
    wait_for(r.id, all_ready(6), workers=[second])
    assert Candidate.objects.filter(group__round=r).count() == 6
    for c in Candidate.objects.filter(id__in=killed):
        assert c.status == "ready" and c.attempts == 2, (c.id, c.attempts)
    assert set(storage.object_list(prefix=storage.round_prefix(round_id=r.id))) == expected_keys(r)
    check_candidate_objects(r, tmp_path)


@pytest.mark.browser
def test_generated_video_plays_in_chromium(s3_storage, make_round, page, fast_settings, django_capture_on_commit_callbacks, monkeypatch):
    from generation_workers import tasks

    monkeypatch.setattr("annotation.services.dispatch.generation_dispatch", lambda batches: None)
    r = make_round(n_prompts=1, seeds=2)
    with django_capture_on_commit_callbacks(execute=True):
        batches = round_generation_enqueue(round_id=r.id)
    assert tasks.candidates_generate.apply(args=[batches[0]]).successful()
    c = Candidate.objects.get(id=batches[0][0])
    url = storage.object_url(key=storage.key_from_uri(c.video_uri))
    poster = storage.object_url(key=storage.key_from_uri(c.poster_uri))
    page.set_content(f'<video id="v" src="{url}" poster="{poster}" preload="auto" muted playsinline></video>')
    page.wait_for_function("document.getElementById('v').readyState >= 2", timeout=30_000)
    state = page.evaluate("""() => { const v = document.getElementById('v');
        return {ready: v.readyState, duration: v.duration, w: v.videoWidth, h: v.videoHeight, error: v.error}; }""")
    assert state["error"] is None and state["ready"] >= 2
    assert state["duration"] == pytest.approx(r.num_frames / r.fps, abs=0.05)
    assert (state["w"], state["h"]) == (r.width, r.height)
    page.evaluate("document.getElementById('v').play()")
    page.wait_for_function("document.getElementById('v').currentTime > 0.2", timeout=30_000)


def test_split_queues_on_one_worker(s3_storage, start_worker, make_round, settings):
    """Text encoding, sampling and decoding as a chain over the text, gpu and vae queues (configured broker)."""
    import os

    if not os.environ.get("CELERY_BROKER_URL"):
        pytest.skip("CELERY_BROKER_URL is unset")
    settings.VIDEODPO = {**settings.VIDEODPO, "SPLIT_QUEUES": True}
    worker = start_worker(queues="text,gpu,vae", extra_env={"DJANGO_SETTINGS_MODULE": "tests.generation_workers.worker_settings",
                                                            "TEST_SPLIT_QUEUES": "1"})
    r = make_round(n_prompts=1, seeds=2)
    round_generation_enqueue(round_id=r.id)
    wait_for(r.id, all_ready(2), workers=[worker])
    log = worker.log_path.read_text()
    for name in ("candidates_text_encode", "candidates_sample", "candidates_decode"):
        assert f"generation_workers.tasks.{name}" in log and "succeeded" in log
    assert set(storage.object_list(prefix=storage.round_prefix(round_id=r.id))) == expected_keys(r)
