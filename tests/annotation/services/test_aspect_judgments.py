"""Per-aspect judgments (visual quality, motion quality, text alignment): the pure majority, what a submit stores, the
pairs' per-aspect outcomes, the refusals, the API, QC per aspect and the VideoAlign / raw exports."""

from __future__ import annotations

import json

import pytest

from annotation.agreement import CHOSEN, REJECTED, SAME, aspect_outcomes
from annotation.models import CandidateLabel, Judgment, PreferencePair
from annotation.services import judgments as J
from annotation.services.assignments import assignment_reserve_next
from annotation.services.judgments import JudgmentError, LabelInput, judgment_submit
from tests.annotation.factories import RoundFactory, annotator, group_with_candidates

pytestmark = pytest.mark.django_db

P, U, N = "preferred", "neutral", "non_preferred"


# -- the pure majority ------------------------------------------------------------------------------------------------
def test_aspect_outcomes_majority_ties_and_absent_aspects():
    a, b = 1, 2
    judgments = [
        {a: {"vq": P, "mq": U, "ta": N}, b: {"vq": N, "mq": U, "ta": P}},
        {a: {"vq": U, "mq": P, "ta": N}, b: {"vq": N, "mq": N, "ta": U}},
        {a: {"vq": N, "mq": N, "ta": U}, b: {"vq": U, "mq": P, "ta": U}},
    ]
    # vq: chosen, chosen, rejected -> chosen; mq: same, chosen, rejected -> a three-way tie -> same; ta: rejected x2
    assert aspect_outcomes(chosen=a, rejected=b, judgments=judgments) == {"vq": CHOSEN, "mq": SAME, "ta": REJECTED}
    assert aspect_outcomes(chosen=b, rejected=a, judgments=judgments) == {"vq": REJECTED, "mq": SAME, "ta": CHOSEN}
    # a judgment without aspects (or without one of the two candidates) does not vote; nobody voting: absent
    assert aspect_outcomes(chosen=a, rejected=b, judgments=[{}, {a: {"vq": P}}]) == {}
    assert aspect_outcomes(chosen=a, rejected=b, judgments=[{a: {"vq": P}, b: {"vq": P, "ta": N}}]) == {"vq": SAME}
    # one vote each way: a tie between the two directions is "same", never the first one
    split = [{a: {"vq": P}, b: {"vq": N}}, {a: {"vq": N}, b: {"vq": P}}]
    assert aspect_outcomes(chosen=a, rejected=b, judgments=split) == {"vq": SAME}


# -- submits ----------------------------------------------------------------------------------------------------------
def aspect_round(k=2, annotators=3, **kw):
    group = group_with_candidates(
        k=k, round=RoundFactory(annotators_per_group=annotators, max_annotators_per_group=annotators, aspect_judgments=True, **kw))
    users = [annotator() for _ in range(annotators)]
    return group, users, [assignment_reserve_next(annotator=u) for u in users]


def labels_for(assignment, overall: dict[int, str], aspects: dict[int, dict[str, str]]) -> list[LabelInput]:
    """LabelInputs naming candidates by id: overall label and per-aspect labels per candidate id."""
    return [LabelInput(candidate_id=cid, label=overall.get(cid, U), playback_coverage=1.0, aspects=aspects.get(cid, {}))
            for cid in assignment.shown_order]


def test_aspects_are_stored_per_candidate_and_pairs_carry_the_majority_per_aspect():
    group, users, assignments = aspect_round()
    win, lose = sorted(assignments[0].shown_order)
    overall = {win: P, lose: N}
    answers = [  # the winner looks better (2 of 3) but follows the prompt worse (3 of 3); motion: no majority
        {win: {"vq": P, "mq": P, "ta": N}, lose: {"ta": P}},
        {win: {"vq": P, "ta": N}, lose: {"mq": P}},
        {win: {"ta": N}, lose: {"vq": P}},
    ]
    for u, a, aspects in zip(users, assignments, answers, strict=True):
        judgment_submit(annotator=u, assignment_id=a.pk, outcome="labelled", labels=labels_for(a, overall, aspects))
    stored = CandidateLabel.objects.filter(judgment__annotator=users[1], candidate_id=lose).get()
    assert stored.aspects == {"vq": U, "mq": P, "ta": U}  # every aspect of every candidate: unmarked = same
    pair = PreferencePair.objects.get()
    assert (pair.chosen_id, pair.rejected_id) == (win, lose)
    # vq: chosen, chosen, rejected; mq: chosen, rejected, same (tie -> same); ta: rejected x3
    assert pair.aspects == {"vq": CHOSEN, "mq": SAME, "ta": REJECTED}


def test_a_skip_stores_no_aspects_and_an_overall_round_stores_none():
    group, users, assignments = aspect_round(k=2, annotators=1)
    judgment_submit(annotator=users[0], assignment_id=assignments[0].pk, outcome="skipped", skip_reason="broken",
                    labels=[])
    assert CandidateLabel.objects.count() == 2 and all(lab.aspects == {} for lab in CandidateLabel.objects.all())
    plain = group_with_candidates(k=2, round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1))
    user = annotator()
    a = assignment_reserve_next(annotator=user)
    assert a.group_id == plain.pk
    x, y = a.shown_order
    judgment_submit(annotator=user, assignment_id=a.pk, outcome="labelled", labels=labels_for(a, {x: P, y: N}, {}))
    assert PreferencePair.objects.get().aspects == {}
    assert all(lab.aspects == {} for lab in CandidateLabel.objects.filter(judgment__annotator=user))


@pytest.mark.parametrize(
    "aspect_round_on, aspects, outcome, message",
    [
        (False, {"vq": P}, "labelled", J.ERR_ASPECTS_OFF),
        (True, {"sharpness": P}, "labelled", J.ERR_UNKNOWN_ASPECT.format(value="sharpness")),
        (True, {"mq": "great"}, "labelled", J.ERR_ASPECT_LABEL.format(aspect="motion quality", value="great", video=1)),
        (True, {"ta": N}, "skipped", J.ERR_ASPECTS_SKIPPED),
    ],
)
def test_bad_aspects_are_refused_and_nothing_is_stored(aspect_round_on, aspects, outcome, message):
    group_with_candidates(k=2, round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1,
                                                          aspect_judgments=aspect_round_on))
    user = annotator()
    a = assignment_reserve_next(annotator=user)
    first, second = a.shown_order
    labels = [LabelInput(candidate_id=first, label=P if outcome == "labelled" else U, playback_coverage=1.0, aspects=aspects),
              LabelInput(candidate_id=second, label=N if outcome == "labelled" else U, playback_coverage=1.0)]
    with pytest.raises(JudgmentError) as exc:
        judgment_submit(annotator=user, assignment_id=a.pk, outcome=outcome, labels=labels, skip_reason="x")
    assert exc.value.message == message and exc.value.status == 400
    assert not Judgment.objects.exists() and not CandidateLabel.objects.exists() and not PreferencePair.objects.exists()


# -- the API ----------------------------------------------------------------------------------------------------------
def test_api_shows_the_aspects_and_takes_them_by_shown_position(client):
    group, users, _ = aspect_round(k=2, annotators=1)
    client.force_login(users[0])
    page = client.get("/api/groups/next/").json()
    assert page["aspects"] == ["vq", "mq", "ta"]
    body = {"assignment": page["assignment"], "outcome": "labelled", "labels": [
        {"position": 0, "label": P, "playback_coverage": 1, "aspects": {"vq": P, "ta": N}},
        {"position": 1, "label": N, "playback_coverage": 1, "aspects": {"ta": P}}]}
    bad = client.post("/api/judgments/submit/", {**body, "labels": [{**body["labels"][0], "aspects": {"vq": "best"}}]},
                      content_type="application/json")
    assert bad.status_code == 400 and "visual quality" in json.dumps(bad.json())
    bad = client.post("/api/judgments/submit/", {**body, "labels": [{**body["labels"][0], "aspects": ["vq"]}]},
                      content_type="application/json")
    assert bad.status_code == 400 and not Judgment.objects.exists()
    ok = client.post("/api/judgments/submit/", body, content_type="application/json")
    assert ok.status_code == 201
    pair = PreferencePair.objects.get()
    assert pair.aspects == {"vq": CHOSEN, "mq": SAME, "ta": REJECTED}
    mine = client.get("/api/judgments/").json()["results"][0]["labels"]
    assert sorted(lab["aspects"]["ta"] for lab in mine) == [N, P]


# -- QC and exports ---------------------------------------------------------------------------------------------------
def _judge_three(assignments, users, per_user_aspects):
    win, lose = sorted(assignments[0].shown_order)
    for u, a, aspects in zip(users, assignments, per_user_aspects, strict=True):
        judgment_submit(annotator=u, assignment_id=a.pk, outcome="labelled", labels=labels_for(a, {win: P, lose: N}, aspects))
    return win, lose


def test_qc_reports_agreement_per_aspect():
    from annotation.selectors.stats import round_quality

    group, users, assignments = aspect_round()
    win, lose = sorted(assignments[0].shown_order)
    same = {win: {"vq": P, "mq": P, "ta": P}, lose: {"vq": N, "mq": N, "ta": N}}
    split = {win: {"vq": N, "mq": P}, lose: {"vq": P, "mq": N}}
    _judge_three(assignments, users, [same, same, split])
    report = round_quality(round=group.round)
    rows = {r["aspect"]: r for r in report["aspects"]}
    assert list(rows) == ["vq", "mq", "ta"] and rows["vq"]["units"] == 2
    # motion quality: all three agree on both candidates; visual quality: one of three disagrees on both
    assert rows["mq"]["pairwise_agreement"] == pytest.approx(1.0)
    assert rows["vq"]["pairwise_agreement"] == pytest.approx(1 / 3)
    # text alignment: two say better/worse, one left both at "same"
    assert rows["ta"]["pairwise_agreement"] == pytest.approx(1 / 3)


# -- odd stored values (an admin edit, raw SQL) never break a reader -------------------------------------------------
def test_admin_edits_are_validated_and_odd_stored_values_are_skipped(client):
    from django.core.exceptions import ValidationError

    from annotation.models import validate_label_aspects, validate_pair_aspects
    from annotation.selectors.stats import round_quality
    from annotation.services.accounts import user_create

    for bad in ({"vq": "great"}, {"vq": None}, ["vq"], "vq", 3, {"beauty": P}):
        with pytest.raises(ValidationError):
            validate_label_aspects(bad)
    validate_label_aspects({"vq": P, "ta": N})
    with pytest.raises(ValidationError):
        validate_pair_aspects({"vq": "weird"})
    validate_pair_aspects({"mq": SAME})

    group, users, assignments = aspect_round()
    win, lose = sorted(assignments[0].shown_order)
    judgment_submit(annotator=users[0], assignment_id=assignments[0].pk, outcome="labelled",
                    labels=labels_for(assignments[0], {win: P, lose: N}, {win: {"vq": P}}))
    # stored behind the services' back: odd values on both labels, and on the pair
    CandidateLabel.objects.filter(candidate_id=win).update(aspects=["vq"])
    CandidateLabel.objects.filter(candidate_id=lose).update(aspects={"vq": "great", "ta": [P]})
    PreferencePair.objects.update(aspects=["vq"])
    for u, a in zip(users[1:], assignments[1:], strict=True):
        judgment_submit(annotator=u, assignment_id=a.pk, outcome="labelled",
                        labels=labels_for(a, {win: P, lose: N}, {win: {"ta": P}}))
    assert PreferencePair.objects.get().aspects == {"vq": SAME, "mq": SAME, "ta": CHOSEN}  # the two valid votes
    assert {r["aspect"] for r in round_quality(round=group.round)["aspects"]} == {"vq", "mq", "ta"}
    PreferencePair.objects.update(aspects="x")
    researcher = user_create(username="res-odd", password="pw-research-1", roles=["researcher", "reviewer"])
    client.force_login(researcher)
    res = client.get(f"/api/pairs/?round={group.round_id}")
    assert res.status_code == 200 and res.json()["results"][0]["aspects"] == {}
    res = client.get(f"/api/judgments/?round={group.round_id}")
    assert res.status_code == 200
    shown = [lab["aspects"] for j in res.json()["results"] for lab in j["labels"]]
    assert len(shown) == 6 and shown.count({}) == 2  # the first judgment's two odd labels: nothing valid to show
    assert client.get(f"/qc/?round={group.round_id}").status_code == 200


def test_the_round_admin_fixes_the_answer_settings_once_the_round_left_draft(rf):
    from django.contrib.admin.sites import site

    from annotation.models import Round

    admin = site._registry[Round]
    rnd = RoundFactory(status=Round.Status.DRAFT)
    assert "aspect_judgments" not in admin.get_readonly_fields(rf.get("/"), rnd)
    rnd.status = Round.Status.ANNOTATING
    assert {"aspect_judgments", "annotation_mode"} <= set(admin.get_readonly_fields(rf.get("/"), rnd))


def test_qc_compares_a_reward_model_with_each_annotator_and_aspect(client):
    from annotation.models import RewardRun, RewardScore
    from annotation.selectors.stats import reward_human_agreement
    from annotation.services.accounts import user_create

    group, users, assignments = aspect_round(annotators=2)
    win, lose = sorted(assignments[0].shown_order)
    assert reward_human_agreement(round=group.round) is None  # no reward scores yet: no section
    # annotator 0: win over lose, win better on ta; annotator 1: the other way round, lose better on ta and vq
    judgment_submit(annotator=users[0], assignment_id=assignments[0].pk, outcome="labelled",
                    labels=labels_for(assignments[0], {win: P, lose: N}, {win: {"ta": P}}))
    judgment_submit(annotator=users[1], assignment_id=assignments[1].pk, outcome="labelled",
                    labels=labels_for(assignments[1], {win: N, lose: P}, {lose: {"ta": P, "vq": P}}))
    run = RewardRun.objects.create(name="rm", init_checkpoint=group.round.policy_checkpoint, status="done",
                                   config={"aspects": ["overall", "ta", "vq"]})
    RewardScore.objects.create(run=run, candidate_id=win, scores={"overall": 1.0, "ta": 0.9, "vq": 0.1})
    RewardScore.objects.create(run=run, candidate_id=lose, scores={"overall": -1.0, "ta": -0.9, "vq": 0.5})
    report = reward_human_agreement(round=group.round)
    assert report["run"] == run
    assert {a["annotator_id"]: (a["pairs"], a["agreement"]) for a in report["annotators"]} == {
        users[0].pk: (1, 1.0), users[1].pk: (1, 0.0)}
    # ta: annotator 0 agrees, annotator 1 does not; vq: annotator 1 (lose better) agrees with the model (0.5 > 0.1)
    assert {a["aspect"]: (a["pairs"], a["agreement"]) for a in report["aspects"]} == {"ta": (2, 0.5), "vq": (1, 1.0)}
    reviewer = user_create(username="rev-qc", password="pw-review-12", roles=["reviewer"])
    client.force_login(reviewer)
    page = client.get(f"/qc/?round={group.round_id}").content.decode()
    assert 'id="reward-agreement"' in page and f'id="reward-agreement-{users[1].pk}"' in page
