"""Finding 3: parallel "next group" calls of one annotator never hold more than 1 + lookahead live reservations."""

from __future__ import annotations

import threading

import pytest
import requests
from django.db.models import Sum
from knox.models import AuthToken

from annotation.conf import conf
from annotation.models import Assignment, CandidateGroup
from tests.annotation.factories import RoundFactory, annotator, group_with_candidates

N_PARALLEL = 20


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # keep the migrations' roles for later tests
def test_twenty_parallel_next_calls_reserve_at_most_one_plus_lookahead(live_server):
    rnd = RoundFactory(annotators_per_group=3, max_annotators_per_group=3)
    for _ in range(30):
        group_with_candidates(k=2, round=rnd)
    user = annotator()
    token = AuthToken.objects.create(user=user)[1]
    barrier = threading.Barrier(N_PARALLEL)
    answers: list[tuple[int, int | None]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def call():
        try:
            with requests.Session() as s:
                barrier.wait()
                res = s.get(f"{live_server.url}/api/groups/next/", headers={"Authorization": f"Token {token}"},
                            timeout=60)
            with lock:
                answers.append((res.status_code, res.json()["assignment"] if res.status_code == 200 else None))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(N_PARALLEL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert [code for code, _ in answers] == [200] * N_PARALLEL
    limit = 1 + conf("RESERVATION_LOOKAHEAD")
    live = Assignment.objects.filter(annotator=user, status=Assignment.Status.RESERVED)
    assert live.count() <= limit
    assert len({a for _, a in answers}) == 1  # every call shows the same current group
    held = CandidateGroup.objects.filter(round=rnd).aggregate(n=Sum("active_reservations"))["n"]
    assert held == live.count()  # the slot counters agree
