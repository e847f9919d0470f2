"""A group's status follows its candidates once they are all finished (walk-r1: a round with a flagged candidate
showed ``generating 1`` forever): ``ready`` with two usable candidates, ``unusable`` (with why, on the round page)
with fewer; retry-failed and the ``groups_refresh`` repair (round page button, periodic task) resolve it. Sibling
candidates finished at the same time by two connections still open their group (the group row lock)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client

from annotation.models import Candidate, CandidateGroup, Round
from annotation.services import candidates as svc
from generation_workers import tasks
from tests.annotation.factories import UserFactory
from tests.generation_workers.test_candidate_services import _finish, _launched, launch


def _encode(c):
    assert svc.candidate_mark_running(candidate_id=c.id, total_steps=2)
    assert svc.candidate_mark_encoded(candidate_id=c.id, video_uri="s3://b/v.mp4", poster_uri="s3://b/p.jpg",
                                      sprite_uri="s3://b/s.jpg", duration_s=2.125, num_frames=17, fps=8.0)


def _ready(c, flags=()):
    return svc.candidate_mark_ready(candidate_id=c.id, latent_uri="s3://b/l", text_embedding_uri="s3://b/t",
                                    screening_flags=list(flags), screening_metrics={}, prompt_truncated=False)


@pytest.mark.django_db
def test_flagged_and_excluded_candidate_makes_the_group_unusable_and_the_page_says_why(
        make_round, no_dispatch, django_capture_on_commit_callbacks):
    r, (a, b) = _launched(make_round, django_capture_on_commit_callbacks)
    _finish(a)
    _finish(b, flags=["black"])
    group = CandidateGroup.objects.get(round=r)
    assert group.status == CandidateGroup.Status.UNUSABLE
    r.refresh_from_db()
    assert r.status == Round.Status.ANNOTATING
    client = Client()
    client.force_login(UserFactory(roles=["researcher"]))
    page = client.get(f"/research/rounds/{r.id}/", HTTP_HX_REQUEST="true").content.decode()
    assert "unusable 1" in page and 'id="round-unusable"' in page
    assert f"group {group.id}" in page and "1 usable candidate of 2" in page
    assert "1 flagged by screening and excluded by the round" in page and f"candidate {b.id}: ready [black]" in page
    # the researcher allows flagged candidates, then re-checks the groups: the group opens
    Round.objects.filter(id=r.id).update(exclude_flagged=False)
    res = client.post(f"/research/rounds/{r.id}/refresh-groups/", follow=True)
    assert res.status_code == 200 and "1 changed status" in res.content.decode()
    assert CandidateGroup.objects.get(id=group.id).status == CandidateGroup.Status.READY
    assert client.post("/research/rounds/999999/refresh-groups/").status_code == 404


@pytest.mark.django_db
def test_failed_candidate_makes_the_group_unusable_until_retried(
        make_round, no_dispatch, django_capture_on_commit_callbacks):
    r, (a, b) = _launched(make_round, django_capture_on_commit_callbacks)
    _finish(a)
    assert svc.candidate_mark_running(candidate_id=b.id)
    assert svc.candidate_mark_failed(candidate_id=b.id, error="CUDA out of memory")
    assert CandidateGroup.objects.get(round=r).status == CandidateGroup.Status.UNUSABLE
    with django_capture_on_commit_callbacks(execute=True):
        assert svc.candidates_retry_failed(round_id=r.id) == 1
    assert CandidateGroup.objects.get(round=r).status == CandidateGroup.Status.GENERATING
    _finish(Candidate.objects.get(id=b.id))
    assert CandidateGroup.objects.get(round=r).status == CandidateGroup.Status.READY


@pytest.mark.django_db
def test_periodic_refresh_heals_a_stuck_group_and_leaves_waiting_ones(
        make_round, no_dispatch, django_capture_on_commit_callbacks):
    r = make_round(n_prompts=3, seeds=2)
    launch(r, django_capture_on_commit_callbacks)
    g_ready, g_unusable, g_waiting = CandidateGroup.objects.filter(round=r).order_by("id")
    for c in g_ready.candidates.all():
        _finish(c)
    first, second = g_unusable.candidates.order_by("id")
    _finish(first)
    _finish(second, flags=["black"])
    _finish(g_waiting.candidates.order_by("id").first())  # its sibling is still queued
    # the state the walk found (left by the old code): finished groups still "generating"
    CandidateGroup.objects.filter(id__in=[g_ready.id, g_unusable.id]).update(status=CandidateGroup.Status.GENERATING)
    assert tasks.groups_refresh.apply().get() == 2
    statuses = dict(CandidateGroup.objects.filter(round=r).values_list("id", "status"))
    assert statuses == {g_ready.id: "ready", g_unusable.id: "unusable", g_waiting.id: "generating"}
    assert svc.groups_refresh(round_id=r.id) == 0  # idempotent


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_siblings_finished_concurrently_by_two_connections_open_their_group(
        make_round, no_dispatch, django_capture_on_commit_callbacks):
    """Two workers mark the two candidates of each group ready at the same instant, each in its own connection and
    transaction: the group row lock serialises the sibling check, so every group ends ``ready``."""
    r = make_round(n_prompts=8, seeds=2, exclude_flagged=False)  # ready, flagged or not, counts
    launch(r, django_capture_on_commit_callbacks)
    pairs = [list(g.candidates.order_by("id")) for g in CandidateGroup.objects.filter(round=r).order_by("id")]
    for pair in pairs:
        for c in pair:
            _encode(c)
    errors: list[BaseException] = []

    def worker(index: int, barrier: threading.Barrier) -> None:
        try:
            for pair in pairs:
                barrier.wait(timeout=30)
                assert _ready(pair[index], flags=["static"] if index else [])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=worker, args=(i, barrier)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert set(CandidateGroup.objects.filter(round=r).values_list("status", flat=True)) == {"ready"}
    assert svc.groups_refresh(round_id=r.id) == 0  # nothing was left to repair
    r.refresh_from_db()
    assert r.status == Round.Status.ANNOTATING
