"""factory_boy factories for the annotation domain (rows only; media files come from conftest fixtures)."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from annotation import models
from annotation.services.accounts import annotator_profile_ensure


def ensure_default_data() -> None:
    """Roles, categories and flaw tags come from data migration 0002; a transactional test's flush removes them."""
    from annotation.defaults import CATEGORIES, FLAW_TAGS, ROLE_PERMISSIONS

    if models.FlawTag.objects.exists() and Group.objects.filter(name="annotator").exists():
        return
    for role in ROLE_PERMISSIONS:
        Group.objects.get_or_create(name=role)
    for slug, name in CATEGORIES:
        models.Category.objects.get_or_create(slug=slug, defaults={"name": name})
    for order, (slug, name) in enumerate(FLAW_TAGS):
        models.FlawTag.objects.get_or_create(slug=slug, defaults={"name": name, "order": order})


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "pw-123456")

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        self.save()
        ensure_default_data()
        if extracted:
            self.groups.set(Group.objects.filter(name__in=extracted))
        annotator_profile_ensure(user=self)


def annotator(**kwargs):
    return UserFactory(roles=["annotator"], **kwargs)


class PromptSetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.PromptSet

    name = factory.Sequence(lambda n: f"set {n}")
    guidelines_md = "Prefer **smooth motion**."


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Prompt

    text = factory.Sequence(lambda n: f"a red fox running through snow, take {n}")
    text_hash = factory.Sequence(lambda n: f"{n:064x}")
    category = factory.LazyFunction(lambda: models.Category.objects.order_by("slug").first())


class CheckpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Checkpoint

    name = factory.Sequence(lambda n: f"ckpt-secret-{n}")
    uri = "file:///nonexistent/ckpt"


class RoundFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Round

    name = factory.Sequence(lambda n: f"round-secret-{n}")
    status = models.Round.Status.ANNOTATING
    policy_checkpoint = factory.SubFactory(CheckpointFactory)
    num_steps, cfg_scale, shift, height, width, num_frames, fps = 10, 5.0, 17.0, 64, 64, 50, 25
    annotators_per_group = 2
    max_annotators_per_group = 3
    require_full_playback = False


class GroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.CandidateGroup

    round = factory.SubFactory(RoundFactory)
    prompt = factory.SubFactory(PromptFactory)
    status = models.CandidateGroup.Status.READY
    target_judgments = factory.LazyAttribute(lambda o: o.round.annotators_per_group)


class CandidateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Candidate

    group = factory.SubFactory(GroupFactory)
    checkpoint = factory.LazyAttribute(lambda o: o.group.round.policy_checkpoint)
    seed = factory.Sequence(lambda n: 9_000_000 + n)
    status = models.Candidate.Status.READY
    video_uri = factory.LazyAttribute(lambda o: f"rounds/{o.group.round_id}/groups/{o.group.pk}/candidates/x/video.mp4")
    fps = 25.0
    duration_s = 2.0
    num_frames = 50


def group_with_candidates(*, k: int = 4, round=None, **group_kwargs) -> models.CandidateGroup:
    group = GroupFactory(round=round or RoundFactory(), **group_kwargs)
    for _ in range(k):
        CandidateFactory(group=group)
    return group
