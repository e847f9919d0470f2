"""Several threads (own DB connections) pull and submit on the same groups: no lost or duplicated judgment."""

import threading
import time

import pytest
from django.db import connection
from django.db.models import F

from annotation.models import Assignment, CandidateGroup, Judgment
from annotation.services.assignments import assignments_for_annotator
from annotation.services.judgments import judgment_submit
from tests.annotation.factories import RoundFactory, annotator, group_with_candidates
from tests.annotation.helpers import by_position


@pytest.mark.django_db(transaction=True)
def test_threads_pull_and_submit_without_loss_or_duplicates():
    rnd = RoundFactory(annotators_per_group=3, max_annotators_per_group=3)
    groups = [group_with_candidates(k=2, round=rnd) for _ in range(10)]
    users = [annotator() for _ in range(6)]
    accepted: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(users))

    def open_for(user) -> bool:
        """Groups with a free slot this user has not had, locks ignored: the queue skips rows that another thread
        holds locked for a moment, so an empty answer alone does not mean that the work is done."""
        return (
            CandidateGroup.objects.filter(pk__in=[g.pk for g in groups], status=CandidateGroup.Status.READY)
            .alias(load=F("judgments_count") + F("active_reservations")).filter(load__lt=F("target_judgments"))
            .exclude(assignments__annotator=user).exists()
        )

    def work(user):
        try:
            barrier.wait()
            deadline = time.monotonic() + 90
            while True:
                live = assignments_for_annotator(annotator=user, lookahead=1)
                if not live:
                    if open_for(user) and time.monotonic() < deadline:
                        time.sleep(0.01)
                        continue
                    return
                a = live[0]
                # every submit twice: the second is the idempotent replay and must not add a row
                for _ in range(2):
                    judgment, created = judgment_submit(
                        annotator=user, assignment_id=a.pk, outcome="labelled",
                        labels=by_position(a, {0: "preferred", 1: "non_preferred"}),
                    )
                    if created:
                        with lock:
                            accepted.append(judgment.pk)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(accepted) == len(set(accepted)) == Judgment.objects.count() == 30  # 10 groups x k=3
    per_pair = Judgment.objects.values_list("group_id", "annotator_id")
    assert len(set(per_pair)) == len(per_pair)  # never the same group twice to one annotator
    for group in CandidateGroup.objects.filter(pk__in=[g.pk for g in groups]):
        assert group.judgments_count == group.judgments.count() == 3
        assert group.status == CandidateGroup.Status.DONE and group.active_reservations == 0
    assert not Assignment.objects.filter(status=Assignment.Status.RESERVED).exists()
