"""Per-segment judgments (DenseDPO): the round's segments, what a submit stores, the pairs' per-segment outcomes, the
refusals (a segment after the clip's end names it), the API and the form, the exports."""

from __future__ import annotations

import pytest

from annotation.agreement import CHOSEN, REJECTED, SAME, segment_outcomes
from annotation.models import CandidateLabel, Judgment, PreferencePair, segment_count
from annotation.services import judgments as J
from annotation.services.assignments import assignment_reserve_next
from annotation.services.judgments import JudgmentError, LabelInput, judgment_submit
from tests.annotation.factories import RoundFactory, annotator, group_with_candidates

pytestmark = pytest.mark.django_db
P, U, N = "preferred", "neutral", "non_preferred"


def test_segment_count_and_the_pure_majority():
    assert segment_count(seconds=2.0, segment_seconds=1.0) == 2
    # equal segments, the count nearest the asked length: never a sliver at the end (a 17-frame clip at 8 fps is
    # 2.125 s: two segments of 1.06 s, not a third of 0.125 s)
    assert segment_count(seconds=2.04, segment_seconds=1.0) == 2 and segment_count(seconds=0.5, segment_seconds=1) == 1
    assert segment_count(seconds=2.125, segment_seconds=1.0) == 2 and segment_count(seconds=2.6, segment_seconds=1) == 3
    assert segment_count(seconds=0.1, segment_seconds=1.0) == 1 and segment_count(seconds=1.49, segment_seconds=1) == 1
    world = RoundFactory.build(num_frames=17, fps=8, segment_judgments=True, segment_seconds=1.0)
    assert (world.segment_count, world.segment_length) == (2, 1.0625)
    assert RoundFactory.build(num_frames=50, fps=25, segment_judgments=True, segment_seconds=0.5).segment_count == 4
    assert RoundFactory.build(segment_judgments=False).segment_count == 0
    a, b = 1, 2
    votes = [{a: [P, U, N], b: [N, U, P]}, {a: [P, N], b: [U, P]}, {a: [N, U, U], b: [P, U, U]}]
    # segment 1: chosen x2, rejected; 2: same, rejected, same; 3: rejected, same (a tie: same; the short list
    # of the second judgment does not vote there)
    assert segment_outcomes(chosen=a, rejected=b, judgments=votes) == [CHOSEN, SAME, SAME]
    votes[2] = {a: [N, N, N], b: [P, P, P]}
    assert segment_outcomes(chosen=a, rejected=b, judgments=votes) == [CHOSEN, REJECTED, REJECTED]
    assert segment_outcomes(chosen=a, rejected=b, judgments=[{a: [P]}]) == []


def segment_round(annotators=1, **kw):
    group = group_with_candidates(k=2, round=RoundFactory(
        annotators_per_group=annotators, max_annotators_per_group=annotators, segment_judgments=True,
        num_frames=50, fps=25, **kw))  # 2 s clips: two 1-s segments
    users = [annotator() for _ in range(annotators)]
    return group, users, [assignment_reserve_next(annotator=u) for u in users]


def test_segments_are_stored_padded_and_pairs_carry_the_majority_per_segment():
    group, users, assignments = segment_round(annotators=3)
    win, lose = sorted(assignments[0].shown_order)
    answers = [({win: (P, N)}, {}), ({win: (P,)}, {lose: (U, P)}), ({}, {lose: (N,)})]
    for u, a, (w_segments, l_segments) in zip(users, assignments, answers, strict=True):
        labels = [LabelInput(candidate_id=win, label=P, playback_coverage=1.0, segments=w_segments.get(win, ())),
                  LabelInput(candidate_id=lose, label=N, playback_coverage=1.0, segments=l_segments.get(lose, ()))]
        judgment_submit(annotator=u, assignment_id=a.pk, outcome="labelled", labels=labels)
    stored = CandidateLabel.objects.get(judgment__annotator=users[1], candidate_id=win)
    assert stored.segments == [P, U]  # one per segment, unmarked = the same as the others
    pair = PreferencePair.objects.get()
    # segment 1: chosen, chosen, chosen; segment 2: rejected, rejected, same
    assert (pair.chosen_id, pair.segments) == (win, [CHOSEN, REJECTED])


@pytest.mark.parametrize("segments_on, segments, outcome, message", [
    (False, (P,), "labelled", J.ERR_SEGMENTS_OFF),
    (True, (P, U, N), "labelled", J.ERR_SEGMENT_AFTER_END.format(video=1, segment=3, start=2.0, clip=2.0, count=2,
                                                                 seconds=1)),
    (True, (U, "best"), "labelled", J.ERR_SEGMENT_LABEL.format(value="best", segment=2, video=1)),
    (True, (N,), "skipped", J.ERR_SEGMENTS_SKIPPED),
])
def test_bad_segments_are_refused_and_nothing_is_stored(segments_on, segments, outcome, message):
    group_with_candidates(k=2, round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1,
                                                  segment_judgments=segments_on, num_frames=50, fps=25))
    user = annotator()
    a = assignment_reserve_next(annotator=user)
    first, second = a.shown_order
    labels = [LabelInput(candidate_id=first, label=P if outcome == "labelled" else U, playback_coverage=1.0,
                         segments=segments),
              LabelInput(candidate_id=second, label=N if outcome == "labelled" else U, playback_coverage=1.0)]
    with pytest.raises(JudgmentError) as exc:
        judgment_submit(annotator=user, assignment_id=a.pk, outcome=outcome, labels=labels, skip_reason="x")
    assert exc.value.message == message and exc.value.status == 400
    assert "where the clip has ended" not in message or "segment 3 would start at 2.00 s" in message
    assert not Judgment.objects.exists() and not CandidateLabel.objects.exists()


def test_api_and_form_take_segments_by_shown_position(client):
    group, users, _ = segment_round()
    client.force_login(users[0])
    page = client.get("/api/groups/next/").json()
    assert (page["segment_count"], page["segment_seconds"]) == (2, 1.0)
    body = {"assignment": page["assignment"], "outcome": "labelled", "labels": [
        {"position": 0, "label": P, "playback_coverage": 1, "segments": [P, N]},
        {"position": 1, "label": N, "playback_coverage": 1}]}
    bad = client.post("/api/judgments/submit/", {**body, "labels": [{**body["labels"][0], "segments": [P, P, P]}]},
                      content_type="application/json")
    assert bad.status_code == 400 and "segment 3 would start at 2.00 s" in bad.content.decode()
    assert client.post("/api/judgments/submit/", body, content_type="application/json").status_code == 201
    pair = PreferencePair.objects.get()
    assert pair.segments == [CHOSEN, REJECTED]
    mine = client.get("/api/judgments/").json()["results"][0]["labels"]
    assert sorted(tuple(lab["segments"]) for lab in mine) == sorted([(P, N), (U, U)])

    group, users, _ = segment_round()
    client.force_login(users[0])
    html = client.get("/annotate/").content.decode()
    assert 'name="segment_0_1"' in html and 'data-segments="2"' in html
    from annotation.models import Assignment

    handle = str(Assignment.objects.get(annotator=users[0]).public_id)
    form = {"assignment": handle, "outcome": "labelled", "label_0": P, "label_1": N, "coverage_0": "1",
            "coverage_1": "1", "segment_0_0": N, "segment_0_1": P, "time_spent_ms": "10"}
    assert client.post("/annotate/submit/", {**form, "segment_0_x": P}).status_code == 400
    assert client.post("/annotate/submit/", form).status_code == 302  # to the next group
    j = Judgment.objects.get(annotator=users[0])
    assert {lab.shown_position: lab.segments for lab in j.labels.all()} == {0: [N, P], 1: [U, U]}


def test_odd_form_keys_and_nul_characters_are_refused_with_a_400(client):
    from annotation.models import Assignment
    from annotation.services.rounds import round_create

    group, users, _ = segment_round()
    client.force_login(users[0])
    client.get("/annotate/")
    handle = str(Assignment.objects.get(annotator=users[0]).public_id)
    form = {"assignment": handle, "outcome": "labelled", "label_0": P, "label_1": N, "coverage_0": "1",
            "coverage_1": "1", "time_spent_ms": "10"}
    for odd in ("segment_0_01", "segment_0_\u0661", "segment_7_0"):  # a leading zero, an Arabic-Indic digit, no video 8
        res = client.post("/annotate/submit/", {**form, odd: P})
        assert res.status_code == 400, odd
    res = client.post("/annotate/submit/", {**form, "outcome": "skipped", "skip_reason": "a\x00b"})
    assert res.status_code == 400 and "NUL character" in res.content.decode()
    assert not Judgment.objects.exists()
    from annotation.services.accounts import user_create

    client.force_login(user_create(username="res-nul", password="pw-research-1", roles=["researcher"]))
    assert client.get("/research/prompts/", {"search": "x\x00"}).status_code == 400
    assert client.post("/research/reward-runs/new/", {"name": "a\x00b"}).status_code == 400
    with pytest.raises(Exception, match="must be from 0.2 to 60 seconds"):
        round_create(name="seg", policy_checkpoint=group.round.policy_checkpoint, prompt_ids=[group.prompt_id],
                     segment_judgments=True, segment_seconds=0.1, dry_run=True)


@pytest.mark.parametrize("first, second, where", [
    (dict(segments=(P, U)), dict(segments=(P, N)), "better in segment 1"),
    (dict(segments=(U, N)), dict(segments=(P, N)), "worse in segment 2"),
    (dict(aspects={"mq": P}), dict(aspects={"mq": P, "ta": N}), "better for motion quality"),
])
def test_every_video_marked_the_same_way_in_a_segment_or_aspect_is_refused(first, second, where):
    """"Better than the others here" on every video says nothing and contradicts itself (as "all preferred" does
    overall): 400, nothing stored; one video marked and the other not is fine."""
    group_with_candidates(k=2, round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1, num_frames=50,
                                                  fps=25, segment_judgments=True, aspect_judgments=True))
    user = annotator()
    a = assignment_reserve_next(annotator=user)
    one, two = a.shown_order
    labels = [LabelInput(candidate_id=one, label=P, playback_coverage=1.0, **first),
              LabelInput(candidate_id=two, label=N, playback_coverage=1.0, **second)]
    with pytest.raises(JudgmentError) as exc:
        judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels)
    assert exc.value.status == 400 and f"every video is marked {where}" in exc.value.message
    assert not Judgment.objects.exists()
    labels[1] = LabelInput(candidate_id=two, label=N, playback_coverage=1.0)  # the second unmarked: accepted
    judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels)
    assert Judgment.objects.count() == 1


def test_a_round_without_segments_gives_no_segment_length(client):
    group_with_candidates(k=2, round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1))
    client.force_login(annotator())
    page = client.get("/api/groups/next/").json()
    assert (page["segment_count"], page["segment_seconds"]) == (0, None)
    assert 'data-segment-seconds=""' in client.get("/annotate/").content.decode()
