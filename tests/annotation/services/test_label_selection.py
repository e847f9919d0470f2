"""Which groups people label within a budget: random or by a reward model's uncertainty; the rest held back (not
served) or pseudo-labelled (source model, left out of DPO runs unless asked)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from annotation.models import CandidateGroup, PreferencePair, RewardRun, RewardScore, RoundEvent
from annotation.services.assignments import assignment_reserve_next
from annotation.services.selection import round_release_held, round_select_for_labels
from tests.annotation.factories import RoundFactory, annotator, group_with_candidates

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored_round():
    """Four ready groups of 3 candidates; the reward model's margin between a group's two best: 0.1, 2, 0.5, 5."""
    rnd = RoundFactory(annotators_per_group=1, max_annotators_per_group=1)
    run = RewardRun.objects.create(name="rm", init_checkpoint=rnd.policy_checkpoint, status="done",
                                   config={"aspects": ["overall"]})
    groups = []
    for margin in (0.1, 2.0, 0.5, 5.0):
        g = group_with_candidates(k=3, round=rnd)
        for cand, score in zip(g.candidates.order_by("id"), (0.0, 1.0, 1.0 + margin), strict=True):
            RewardScore.objects.create(run=run, candidate=cand, scores={"overall": score})
        groups.append(g)
    return rnd, run, groups


def test_active_selection_sends_the_most_uncertain_groups_and_holds_the_rest(scored_round):
    rnd, run, groups = scored_round
    summary = round_select_for_labels(round_id=rnd.pk, budget=2, strategy="active", reward_run_id=run.pk)
    assert summary["to_annotators"] == 2 and summary["held"] == 2
    status = {g.pk: CandidateGroup.objects.get(pk=g.pk).status for g in groups}
    assert [status[g.pk] for g in groups] == ["ready", "held", "ready", "held"]  # margins 0.1 and 0.5
    reserved = [assignment_reserve_next(annotator=annotator()) for _ in range(4)]
    served = {a.group_id for a in reserved if a is not None}
    assert served == {groups[0].pk, groups[2].pk}  # held groups are never served
    assert rnd.__class__.objects.get(pk=rnd.pk).config["selection"]["strategy"] == "active"
    assert RoundEvent.objects.filter(round=rnd, note__startswith="label selection: 2 of 4 groups").exists()
    assert round_release_held(round_id=rnd.pk) == 2
    assert CandidateGroup.objects.filter(round=rnd, status="held").count() == 0


def test_random_selection_is_reproducible_and_pseudo_labels_are_marked(scored_round):
    rnd, run, groups = scored_round
    summary = round_select_for_labels(round_id=rnd.pk, budget=1, strategy="random", rest="pseudo",
                                      reward_run_id=run.pk, seed=7)
    assert summary["pseudo_labelled"] == 3 and summary["pseudo_pairs"] == 3
    pairs = PreferencePair.objects.filter(round=rnd)
    assert pairs.count() == 3 and set(pairs.values_list("source", flat=True)) == {"model"}
    for p in pairs:  # the model's best over its worst
        assert p.chosen.reward_scores.get().scores["overall"] > p.rejected.reward_scores.get().scores["overall"]
    assert CandidateGroup.objects.filter(round=rnd, status="done").count() == 3

    from annotation.selectors.exports import pair_queryset_for_export
    from annotation.services.dpo_runs import training_filter

    human_only = pair_queryset_for_export(flt=training_filter(round_ids=[rnd.pk]), format="trl")
    with_pseudo = pair_queryset_for_export(flt=training_filter(round_ids=[rnd.pk], include_pseudo_labels=True),
                                           format="trl")
    assert human_only.count() == 0 and with_pseudo.count() == 3


def test_refusals_name_what_is_missing(scored_round):
    rnd, run, groups = scored_round
    with pytest.raises(ValidationError, match="from 1 to 4"):
        round_select_for_labels(round_id=rnd.pk, budget=5, strategy="random")
    with pytest.raises(ValidationError, match="Active selection needs a finished reward model"):
        round_select_for_labels(round_id=rnd.pk, budget=2, strategy="active")
    with pytest.raises(ValidationError, match="Pseudo-labelling needs a finished reward model"):
        round_select_for_labels(round_id=rnd.pk, budget=2, strategy="random", rest="pseudo")
    RewardScore.objects.filter(candidate__group=groups[1]).delete()
    with pytest.raises(ValidationError, match="has not scored 3 of these groups' candidates"):
        round_select_for_labels(round_id=rnd.pk, budget=2, strategy="active", reward_run_id=run.pk)
    with pytest.raises(ValidationError, match="'random' or 'active'"):
        round_select_for_labels(round_id=rnd.pk, budget=2, strategy="smart")
    assert CandidateGroup.objects.filter(round=rnd, status="ready").count() == 4  # nothing changed
    assert not PreferencePair.objects.exists()


def test_the_round_page_applies_a_selection_and_releases_held_groups(client, scored_round):
    from annotation.services.accounts import user_create

    rnd, run, groups = scored_round
    client.force_login(user_create(username="res-sel", password="pw-research-1", roles=["researcher"]))
    page = client.get(f"/research/rounds/{rnd.pk}/").content.decode()
    assert 'id="label-selection"' in page and f'<option value="{run.pk}">rm</option>' in page
    res = client.post(f"/research/rounds/{rnd.pk}/select/", {"budget": "x", "strategy": "active",
                                                              "reward_run": run.pk}, follow=True)
    assert "from 1 to 4" in res.content.decode() and not CandidateGroup.objects.filter(status="held").exists()
    res = client.post(f"/research/rounds/{rnd.pk}/select/", {"budget": "3", "strategy": "active",
                                                              "reward_run": run.pk}, follow=True)
    text = res.content.decode()
    assert "3 groups to annotators, 1 held back, 0 pseudo-labelled" in text and 'id="selection-applied"' in text
    res = client.post(f"/research/rounds/{rnd.pk}/release-held/", follow=True)
    assert "1 held-back groups sent to annotators" in res.content.decode()
    assert client.post("/research/rounds/999999/select/", {"budget": "1", "strategy": "random"}).status_code == 404


def test_retrying_a_failed_candidate_keeps_a_selection_decision(scored_round, monkeypatch):
    """A held-back or pseudo-labelled group stays so when one of its candidates fails and is retried (it used to go
    back to generating, then ready: served to annotators beside its pseudo pair); a ready group waits again."""
    from annotation.models import Candidate
    from annotation.services import candidates as svc

    monkeypatch.setattr(svc, "_enqueue", lambda cands: len(cands))  # no broker: only the states are checked
    rnd, run, groups = scored_round
    round_select_for_labels(round_id=rnd.pk, budget=2, strategy="active", reward_run_id=run.pk)
    held, ready = groups[1], groups[0]
    for g in (held, ready):
        Candidate.objects.filter(pk=g.candidates.order_by("id").first().pk).update(status=Candidate.Status.FAILED)
    assert svc.candidates_retry_failed(round_id=rnd.pk) == 2
    assert CandidateGroup.objects.get(pk=held.pk).status == "held"
    assert CandidateGroup.objects.get(pk=ready.pk).status == "generating"
