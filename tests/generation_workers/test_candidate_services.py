"""annotation.services.candidates: launch validation, idempotent enqueue, the state machine, retry, cancel, the stale
sweep, and the progress selector. Dispatch is captured (no broker)."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from annotation.models import Candidate, CandidateGroup, Round, RoundEvent
from annotation.selectors.candidates import round_generation_progress
from annotation.services import candidates as svc

pytestmark = pytest.mark.django_db


def launch(r, django_capture_on_commit_callbacks, **kw):
    with django_capture_on_commit_callbacks(execute=True):
        return svc.round_generation_enqueue(round_id=r.id, **kw)


def test_enqueue_creates_prompts_x_seeds_once(make_round, no_dispatch, django_capture_on_commit_callbacks):
    r = make_round(n_prompts=2, seeds=3)
    batches = launch(r, django_capture_on_commit_callbacks)
    assert len(batches) == 6 and no_dispatch == batches
    assert Candidate.objects.filter(group__round=r).count() == 6
    assert sorted(Candidate.objects.filter(group__round=r).values_list("seed", flat=True)) == [100, 100, 101, 101, 102, 102]
    r.refresh_from_db()
    assert r.status == Round.Status.GENERATING and r.started_at is not None
    assert RoundEvent.objects.filter(round=r, to_status="generating").count() == 1
    # launching again creates nothing (still-queued candidates are re-sent, the tasks are idempotent)
    launch(r, django_capture_on_commit_callbacks)
    assert Candidate.objects.filter(group__round=r).count() == 6
    assert CandidateGroup.objects.filter(round=r).count() == 2


def test_batching_groups_the_k_seeds_of_a_prompt(make_round, no_dispatch, django_capture_on_commit_callbacks, settings):
    settings.VIDEODPO = {**settings.VIDEODPO, "BATCH_SEEDS": True}
    r = make_round(n_prompts=2, seeds=3)
    batches = launch(r, django_capture_on_commit_callbacks)
    assert sorted(len(b) for b in batches) == [3, 3]
    groups = {frozenset(Candidate.objects.filter(id__in=b).values_list("group_id", flat=True)) for b in batches}
    assert all(len(g) == 1 for g in groups)


def test_evaluation_round_samples_policy_and_reference_with_the_same_seeds(make_round, no_dispatch, django_capture_on_commit_callbacks, tiny_root):
    from annotation.models import Checkpoint

    ref = Checkpoint.objects.create(name="ref", uri=str(tiny_root), preset="tiny")
    r = make_round(n_prompts=1, seeds=2, kind=Round.Kind.EVALUATION, reference_checkpoint=ref)
    launch(r, django_capture_on_commit_callbacks)
    rows = set(Candidate.objects.filter(group__round=r).values_list("checkpoint_id", "seed"))
    assert rows == {(r.policy_checkpoint_id, 100), (r.policy_checkpoint_id, 101), (ref.id, 100), (ref.id, 101)}


@pytest.mark.parametrize("fields, field, message", [
    ({"preset": "huge"}, "preset", "Unknown model preset 'huge'"),
    ({"num_frames": 20}, "num_frames", "num_frames must be 1 or a multiple of 17"),
    ({"height": 30}, "height", "height and width must be positive multiples of 16; got 30x32, use 16x32"),
    ({"width": 40}, "height", "got 32x40, use 32x32"),
    ({"num_steps": 0}, "num_steps", "num_steps must be between 1 and 1000"),
    ({"shift": 0.0}, "shift", "shift must be > 0"),
    ({"fps": 0}, "fps", "fps must be between 1 and 120"),
    ({"config": {}}, "prompts", "The round has no prompts"),
])
def test_bad_rounds_are_refused_at_launch_with_nothing_queued(make_round, no_dispatch, django_capture_on_commit_callbacks, fields, field, message):
    r = make_round(**fields)
    with pytest.raises(ValidationError) as info:
        launch(r, django_capture_on_commit_callbacks)
    assert field in info.value.message_dict
    assert any(message in m for m in info.value.message_dict[field]), info.value.message_dict
    assert no_dispatch == [] and not Candidate.objects.filter(group__round=r).exists()
    assert not CandidateGroup.objects.filter(round=r).exists()
    r.refresh_from_db()
    assert r.status == Round.Status.DRAFT


def test_missing_checkpoint_files_are_refused(make_round, no_dispatch, django_capture_on_commit_callbacks, tiny_root, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_root, broken)
    (broken / "vae" / "vae_v2.safetensors").unlink()
    for shard in (broken / "transformer").glob("diffusion_pytorch_model*"):
        shard.unlink()
    r = make_round(uri=str(broken))
    with pytest.raises(ValidationError) as info:
        launch(r, django_capture_on_commit_callbacks)
    (msg,) = info.value.message_dict["policy_checkpoint"]
    assert "vae/vae_v2.safetensors" in msg and "DiT weights" in msg
    r2 = make_round(uri=str(tmp_path / "nowhere"))
    with pytest.raises(ValidationError, match="no such folder"):
        launch(r2, django_capture_on_commit_callbacks)
    assert no_dispatch == []


def test_checkpoint_preset_mismatch_is_refused(make_round, no_dispatch, django_capture_on_commit_callbacks):
    r = make_round()
    r.policy_checkpoint.preset = "stepvideo-t2v"
    r.policy_checkpoint.save()
    with pytest.raises(ValidationError, match="was made for preset 'stepvideo-t2v'"):
        launch(r, django_capture_on_commit_callbacks)


def test_s3_checkpoint_is_validated_by_listing(make_round, no_dispatch, django_capture_on_commit_callbacks, s3_storage, s3_server, tiny_root):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server["endpoint_url"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    for path in tiny_root.rglob("*"):
        if path.is_file() and "vae" not in path.parts:
            client.upload_file(str(path), s3_storage, f"ck/{path.relative_to(tiny_root)}")
    r = make_round(uri=f"s3://{s3_storage}/ck")
    with pytest.raises(ValidationError, match="vae_v2.safetensors"):
        launch(r, django_capture_on_commit_callbacks)
    client.upload_file(str(tiny_root / "vae" / "vae_v2.safetensors"), s3_storage, "ck/vae/vae_v2.safetensors")
    assert len(launch(r, django_capture_on_commit_callbacks)) == 6


def _launched(make_round, django_capture_on_commit_callbacks, **kw):
    r = make_round(n_prompts=1, seeds=2, **kw)
    launch(r, django_capture_on_commit_callbacks)
    return r, list(Candidate.objects.filter(group__round=r).order_by("seed"))


def _finish(c, flags=()):
    assert svc.candidate_mark_running(candidate_id=c.id, total_steps=2)
    assert svc.candidate_mark_encoded(candidate_id=c.id, video_uri="s3://b/v.mp4", poster_uri="s3://b/p.jpg",
                                      sprite_uri="s3://b/s.jpg", duration_s=2.125, num_frames=17, fps=8.0)
    assert svc.candidate_mark_ready(candidate_id=c.id, latent_uri="s3://b/l", text_embedding_uri="s3://b/t",
                                    screening_flags=list(flags), screening_metrics={"m": 1}, prompt_truncated=False)


def test_state_machine_and_group_readiness(make_round, no_dispatch, django_capture_on_commit_callbacks):
    r, (a, b) = _launched(make_round, django_capture_on_commit_callbacks)
    assert svc.candidate_mark_running(candidate_id=a.id, total_steps=2)
    assert not svc.candidate_mark_running(candidate_id=a.id)  # held by a live worker
    assert svc.candidate_progress(candidate_ids=[a.id], step=1, total=2) == 1
    p = round_generation_progress(round_id=r.id)
    assert (p["steps_done"], p["steps_total"], p["counts"]["running"]) == (1, 4, 1)
    # ready needs encoded first
    assert not svc.candidate_mark_ready(candidate_id=a.id, latent_uri="x", text_embedding_uri="y", screening_flags=[],
                                        screening_metrics={})
    assert svc.candidate_mark_encoded(candidate_id=a.id, video_uri="s3://b/v.mp4", poster_uri="p", sprite_uri="s",
                                      duration_s=2.1, num_frames=17, fps=8.0)
    assert svc.candidate_mark_ready(candidate_id=a.id, latent_uri="x", text_embedding_uri="y", screening_flags=[],
                                    screening_metrics={"k": 1}, prompt_truncated=True)
    a.refresh_from_db()
    assert a.status == "ready" and a.attempts == 1 and a.prompt_truncated and a.finished_at
    assert CandidateGroup.objects.get(round=r).status == "generating"  # b still pending
    assert svc.candidate_mark_running(candidate_id=b.id)
    assert svc.candidate_mark_failed(candidate_id=b.id, error="boom")
    b.refresh_from_db()
    assert b.status == "failed" and b.error == "boom" and b.attempts == 1
    # all done but only one usable candidate: not annotatable (and says so); the round's generation is over
    assert CandidateGroup.objects.get(round=r).status == "unusable"
    r.refresh_from_db()
    assert r.status == Round.Status.ANNOTATING
    # a finished candidate ignores late writes (a redelivered task)
    assert not svc.candidate_mark_running(candidate_id=a.id)
    assert not svc.candidate_mark_failed(candidate_id=a.id, error="late")
    assert svc.candidate_progress(candidate_ids=[a.id], step=1, total=2) == 0

    # the researcher retries the failed one: it goes back to the queue and the group opens when it is ready
    with django_capture_on_commit_callbacks(execute=True):
        assert svc.candidates_retry_failed(round_id=r.id) == 1
    assert no_dispatch[-1] == [b.id]
    b.refresh_from_db()
    assert b.status == "queued" and b.error == "" and b.attempts == 1
    r.refresh_from_db()
    assert r.status == Round.Status.GENERATING
    assert CandidateGroup.objects.get(round=r).status == "generating"  # waits for the retried candidate
    _finish(b)
    b.refresh_from_db()
    assert b.attempts == 2
    assert CandidateGroup.objects.get(round=r).status == "ready"
    p = round_generation_progress(round_id=r.id)
    assert p["fraction"] == 1.0 and p["counts"]["ready"] == 2


def test_flagged_candidates_do_not_count_as_usable(make_round, no_dispatch, django_capture_on_commit_callbacks):
    r, (a, b) = _launched(make_round, django_capture_on_commit_callbacks)
    _finish(a)
    _finish(b, flags=["static"])
    assert CandidateGroup.objects.get(round=r).status == "unusable"  # one usable candidate left: not served
    r2, (c, d) = _launched(make_round, django_capture_on_commit_callbacks, exclude_flagged=False)
    _finish(c)
    _finish(d, flags=["static"])
    assert CandidateGroup.objects.get(round=r2).status == "ready"


def test_cancel_stops_pending_candidates(make_round, no_dispatch, django_capture_on_commit_callbacks):
    r, (a, b) = _launched(make_round, django_capture_on_commit_callbacks)
    _finish(a)
    assert svc.candidate_mark_running(candidate_id=b.id)
    assert svc.round_generation_cancel(round_id=r.id) == 1
    assert Candidate.objects.get(id=a.id).status == "ready"
    assert Candidate.objects.get(id=b.id).status == "cancelled"
    assert svc.candidate_progress(candidate_ids=[b.id], step=2, total=2) == 0  # the running job stops
    r.refresh_from_db()
    assert r.status == Round.Status.CANCELLED
    with pytest.raises(ValidationError, match="cancelled"):
        launch(r, django_capture_on_commit_callbacks)
    with pytest.raises(ValidationError):
        svc.candidates_retry_failed(round_id=r.id)


def test_stale_running_candidates_are_requeued(make_round, no_dispatch, django_capture_on_commit_callbacks):
    r, (a, b) = _launched(make_round, django_capture_on_commit_callbacks)
    no_dispatch.clear()
    assert svc.candidate_mark_running(candidate_id=a.id)
    assert svc.candidate_mark_running(candidate_id=b.id)
    Candidate.objects.filter(id=a.id).update(updated_at=timezone.now() - timedelta(seconds=600))  # dead worker
    with django_capture_on_commit_callbacks(execute=True):
        assert svc.candidates_requeue_stale(older_than_s=300) == 1
    assert no_dispatch == [[a.id]]
    assert Candidate.objects.get(id=a.id).status == "queued"
    assert Candidate.objects.get(id=b.id).status == "running"  # heartbeat is fresh
    # a stale-running candidate may be taken again directly by a redelivered message
    Candidate.objects.filter(id=b.id).update(updated_at=timezone.now() - timedelta(seconds=600))
    assert svc.candidate_mark_running(candidate_id=b.id)
    assert Candidate.objects.get(id=b.id).attempts == 2


def test_heartbeat_keeps_a_candidate_fresh(make_round, no_dispatch, django_capture_on_commit_callbacks):
    r, (a, _) = _launched(make_round, django_capture_on_commit_callbacks)
    svc.candidate_mark_running(candidate_id=a.id)
    Candidate.objects.filter(id=a.id).update(updated_at=timezone.now() - timedelta(seconds=600))
    assert svc.candidate_heartbeat(candidate_ids=[a.id]) == 1
    assert svc.candidates_requeue_stale(older_than_s=300) == 0


def test_symlinked_components_count(make_round, no_dispatch, django_capture_on_commit_callbacks, tiny_root, tmp_path):
    """A DPO output root holds its own transformer/ and links the VAE and text encoders of its init root."""
    final = tmp_path / "final"
    shutil.copytree(tiny_root / "transformer", final / "transformer")
    for name in ("vae", "step_llm", "hunyuan_clip"):
        (final / name).symlink_to(tiny_root / name, target_is_directory=True)
    r = make_round(uri=str(final))
    assert len(launch(r, django_capture_on_commit_callbacks)) == 6
