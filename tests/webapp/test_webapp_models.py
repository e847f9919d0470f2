"""The database refuses rows that break the domain's invariants."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation import models as m


@pytest.fixture
def world(db):
    user = get_user_model().objects.create_user("ann", password="pw")
    ckpt = m.Checkpoint.objects.create(name="base", uri="file:///nonexistent/base", preset="tiny")
    prompt = m.Prompt.objects.create(text="a cat", text_hash="h1")
    rnd = m.Round.objects.create(name="r1", policy_checkpoint=ckpt, num_steps=4, cfg_scale=5, shift=13,
                                 height=64, width=64, num_frames=17)
    group = m.CandidateGroup.objects.create(round=rnd, prompt=prompt)
    c1 = m.Candidate.objects.create(group=group, checkpoint=ckpt, seed=1)
    c2 = m.Candidate.objects.create(group=group, checkpoint=ckpt, seed=2)
    return {"user": user, "ckpt": ckpt, "prompt": prompt, "round": rnd, "group": group, "c1": c1, "c2": c2}


def refused(fn):
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


def test_roles_exist(db):
    assert set(Group.objects.values_list("name", flat=True)) >= {"annotator", "reviewer", "researcher", "admin"}
    assert m.Category.objects.count() == 11
    assert m.FlawTag.objects.filter(slug="flicker").exists()


def test_unique_seed_per_group(world):
    refused(lambda: m.Candidate.objects.create(group=world["group"], checkpoint=world["ckpt"], seed=1))


def test_ready_candidate_needs_a_video(world):
    refused(lambda: m.Candidate.objects.filter(pk=world["c1"].pk).update(status="ready"))


def test_one_judgment_per_assignment_and_no_group_twice(world):
    a = m.Assignment.objects.create(group=world["group"], annotator=world["user"], shown_order=[1, 2],
                                    expires_at=timezone.now() + dt.timedelta(minutes=5))
    m.Judgment.objects.create(assignment=a, group=world["group"], annotator=world["user"], outcome="all_good")
    refused(lambda: m.Judgment.objects.create(assignment=a, group=world["group"], annotator=world["user"], outcome="all_bad"))
    refused(lambda: m.Assignment.objects.create(group=world["group"], annotator=world["user"], shown_order=[2, 1],
                                                expires_at=timezone.now()))


def test_skip_needs_a_reason(world):
    a = m.Assignment.objects.create(group=world["group"], annotator=world["user"], shown_order=[1, 2],
                                    expires_at=timezone.now())
    refused(lambda: m.Judgment.objects.create(assignment=a, group=world["group"], annotator=world["user"], outcome="skipped"))


def test_pair_chosen_differs_from_rejected_and_is_unique(world):
    refused(lambda: m.PreferencePair.objects.create(round=world["round"], group=world["group"], chosen=world["c1"], rejected=world["c1"]))
    m.PreferencePair.objects.create(round=world["round"], group=world["group"], chosen=world["c1"], rejected=world["c2"])
    refused(lambda: m.PreferencePair.objects.create(round=world["round"], group=world["group"], chosen=world["c1"], rejected=world["c2"]))
    refused(lambda: m.PreferencePair.objects.create(round=world["round"], group=world["group"], chosen=world["c2"],
                                                    rejected=world["c1"], agreement=1.5))


def test_round_settings_are_checked(world):
    base = dict(policy_checkpoint=world["ckpt"], num_steps=4, cfg_scale=5, shift=13, height=64, width=64, num_frames=17)
    refused(lambda: m.Round.objects.create(name="one-seed", seeds_per_prompt=1, **base))
    refused(lambda: m.Round.objects.create(name="gold", gold_rate=1.5, **base))
    refused(lambda: m.Round.objects.create(name="cap", annotators_per_group=4, max_annotators_per_group=3, **base))


def test_empty_prompt_and_duplicate_prompt_refused(world):
    refused(lambda: m.Prompt.objects.create(text="", text_hash="h2"))
    refused(lambda: m.Prompt.objects.create(text="A cat", text_hash="h1"))


def test_label_coverage_bounds(world):
    a = m.Assignment.objects.create(group=world["group"], annotator=world["user"], shown_order=[1, 2], expires_at=timezone.now())
    j = m.Judgment.objects.create(assignment=a, group=world["group"], annotator=world["user"], outcome="labelled")
    refused(lambda: m.CandidateLabel.objects.create(judgment=j, candidate=world["c1"], shown_position=0, playback_coverage=1.2))
