"""Reward-model runs in the app: launched from the research pages like a DPO run, validated before anything is
queued (an aspect the pairs lack is refused with its count), trained by the worker's job on the run's manifest export
(the curve in RewardMetric rows, held-out accuracy per aspect, lineage), shown on the run page; cancel."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from annotation.models import Checkpoint, PreferencePair, RewardMetric, RewardRun
from annotation.services.accounts import user_create
from annotation.services.reward_runs import reward_run_cancel, reward_run_create
from model.world import default_root
from tests.annotation.factories import CandidateFactory, GroupFactory, PromptFactory, RoundFactory
from tests.dpo.test_reward import write_pairs

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher(db):
    return user_create(username="res", password="pw-research-1", roles=["researcher"])


@pytest.fixture
def reward_round(tmp_path, settings):
    """A round whose pairs point at real tiny-world latents and text embeddings (the planted preference of
    ``tests.dpo.test_reward``: text alignment follows it, visual quality is a tie), and the tiny-world checkpoint."""
    from dpo.data import read_manifest

    settings.VIDEODPO = {**settings.VIDEODPO, "RUNS_DIR": str(tmp_path / "runs")}
    checkpoint = Checkpoint.objects.create(name="tiny-world", uri=str(default_root()), preset="tiny")
    rnd = RoundFactory(policy_checkpoint=checkpoint, aspect_judgments=True)
    records = read_manifest(write_pairs(tmp_path, n_prompts=24, seeds=4))
    groups, candidates = {}, {}
    for r in records:
        if r.prompt_id not in groups:
            groups[r.prompt_id] = GroupFactory(round=rnd, prompt=PromptFactory())
        for uri in (r.chosen_latent_uri, r.rejected_latent_uri):
            if uri not in candidates:
                candidates[uri] = CandidateFactory(group=groups[r.prompt_id], latent_uri=uri,
                                                   text_embedding_uri=r.text_embedding_uri)
        PreferencePair.objects.create(round=rnd, group=groups[r.prompt_id], chosen=candidates[r.chosen_latent_uri],
                                      rejected=candidates[r.rejected_latent_uri], aspects=r.aspects, n_annotators=1,
                                      votes_for=1)
    return rnd, checkpoint


def test_a_run_is_validated_then_trained_by_the_job_with_curve_accuracy_and_lineage(reward_round, sent_tasks,
                                                                                     django_capture_on_commit_callbacks):
    from generation_workers.training import reward_run_execute

    rnd, checkpoint = reward_round
    with pytest.raises(ValidationError) as exc:
        reward_run_create(name="rm", round_ids=[rnd.pk], init_checkpoint=checkpoint, aspects=["overall", "mq"])
    assert "aspect 'mq' (motion quality): 0 of 144 pairs carry it" in str(exc.value)
    with pytest.raises(ValidationError, match="t must be in"):
        reward_run_create(name="rm", round_ids=[rnd.pk], init_checkpoint=checkpoint, config_overrides={"t": 2})
    assert not RewardRun.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        run = reward_run_create(name="rm", round_ids=[rnd.pk], init_checkpoint=checkpoint,
                                aspects=["overall", "ta", "vq"], config_overrides={"steps": 60})
    assert sent_tasks == [("generation_workers.tasks.reward_run_execute", (run.pk,), "train")]
    assert run.aspect_pairs == {"overall": 144, "ta": 144, "vq": 144} and run.progress_total == 60

    assert reward_run_execute(run_id=run.pk) == RewardRun.Status.DONE
    run.refresh_from_db()
    held = run.metrics_summary["heldout"]
    assert held["ta"]["accuracy_no_ties"] >= 0.9 and run.metrics_summary["heldout_pairs"] > 0
    assert run.metrics_summary["lineage"]["data_rounds"] == [rnd.pk]
    assert run.metrics_summary["lineage"]["manifest_export"]["sha256"] == run.manifest_export.content_hash
    steps = list(RewardMetric.objects.filter(run=run).values_list("step", flat=True))
    assert steps[-1] == 60 and len(steps) == 60 and run.progress_step == 60
    assert (Path(run.output_uri) / "reward.json").is_file()  # local storage: the folder itself
    assert reward_run_execute(run_id=run.pk) == RewardRun.Status.DONE  # redelivered: left alone

    # the finished run scores the round's candidates (a job), from their stored latents
    from annotation.models import Candidate, RewardScore
    from annotation.services.reward_runs import reward_scores_request
    from generation_workers.training import reward_scores_round

    sent_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert reward_scores_request(run_id=run.pk, round_id=rnd.pk) == 96
    assert sent_tasks == [("generation_workers.tasks.reward_scores_round", (run.pk, rnd.pk), "train")]
    assert reward_scores_round(run_id=run.pk, round_id=rnd.pk) == 96 == RewardScore.objects.count()
    assert reward_scores_round(run_id=run.pk, round_id=rnd.pk) == 96 == RewardScore.objects.count()  # idempotent
    # within each prompt the four seeds carry more and more of the planted direction: text alignment follows
    by_group: dict[int, list[tuple[str, float]]] = {}
    for s in RewardScore.objects.select_related("candidate"):
        by_group.setdefault(s.candidate.group_id, []).append((s.candidate.latent_uri, s.scores["ta"]))
    ordered = [sorted(v)[-1][1] > sorted(v)[0][1] for v in by_group.values()]  # latent-<p>-3 vs latent-<p>-0
    assert sum(ordered) / len(ordered) >= 0.9 and set(RewardScore.objects.first().scores) == {"overall", "ta", "vq"}
    assert Candidate.objects.filter(group__round=rnd).count() == 96
    with pytest.raises(ValidationError, match="only queued or running runs can be cancelled"):
        reward_run_cancel(run_id=run.pk)


def test_the_pages_launch_refuse_and_show_a_run(client, researcher, reward_round, sent_tasks):
    rnd, checkpoint = reward_round
    client.force_login(researcher)
    page = client.get("/research/reward-runs/new/").content.decode()
    assert f"{rnd.name} (144 pairs, 144 with per-aspect outcomes)" in page
    res = client.post("/research/reward-runs/new/", {"name": "rm", "init_checkpoint": checkpoint.pk,
                                                     "rounds": [rnd.pk], "aspects": ["overall", "mq"], "steps": "30"})
    assert res.status_code == 200 and "0 of 144 pairs carry it" in res.content.decode()
    assert 'value="mq" checked' in res.content.decode() and not RewardRun.objects.exists()
    res = client.post("/research/reward-runs/new/", {"name": "rm", "init_checkpoint": checkpoint.pk,
                                                     "rounds": [rnd.pk], "aspects": ["overall", "ta"], "steps": "x"})
    assert "Steps: enter a whole number" in res.content.decode()
    res = client.post("/research/reward-runs/new/", {"name": "rm", "init_checkpoint": checkpoint.pk,
                                                     "rounds": [rnd.pk], "aspects": ["overall", "ta"], "steps": "30"})
    run = RewardRun.objects.get()
    assert res.status_code == 302 and res["Location"] == f"/research/reward-runs/{run.pk}/"
    detail = client.get(res["Location"]).content.decode()
    assert "Reward model rm" in detail and 'id="run-status">queued' in detail
    RewardRun.objects.filter(pk=run.pk).update(status="done", metrics_summary={
        "heldout_pairs": 30, "train_pairs": 114,
        "heldout": {"accuracy_no_ties": 0.9, "accuracy_with_ties": 0.8,
                    "overall": {"accuracy_no_ties": 0.93, "accuracy_with_ties": 0.93, "pairs_no_ties": 30, "pairs": 30,
                                "ties": 0},
                    "ta": {"accuracy_no_ties": 0.87, "accuracy_with_ties": 0.67, "pairs_no_ties": 30, "pairs": 30,
                           "ties": 0}},
        "train": {"overall": {"accuracy_no_ties": 1.0}, "ta": {"accuracy_no_ties": 0.99}}})
    detail = client.get(f"/research/reward-runs/{run.pk}/").content.decode()
    assert 'id="accuracy-ta"' in detail and "0.870" in detail and "0.670" in detail
    assert "± 0.18 (95%) on this many pairs: too few to tell models apart" in detail  # 30 held-out pairs
    assert '<tr id="accuracy-all"><td>all aspects</td><td>0.900</td><td>0.800</td><td>60 / 60 / 0</td>' in detail
    assert client.get("/research/").content.decode().count(f"/research/reward-runs/{run.pk}/") == 1
    assert client.get("/research/reward-runs/999999/").status_code == 404
    page = client.get(f"/research/rounds/{rnd.pk}/").content.decode()
    assert 'id="reward-scores"' in page and f'<option value="{run.pk}">rm</option>' in page
    sent_tasks.clear()
    res = client.post(f"/research/rounds/{rnd.pk}/reward-scores/", {"reward_run": run.pk}, follow=True)
    assert "96 candidates queued for scoring" in res.content.decode()
    assert client.post(f"/research/rounds/{rnd.pk}/reward-scores/", {"reward_run": "x"}).status_code == 404


def test_cancel_before_the_worker_took_the_run(reward_round):
    from generation_workers.training import reward_run_execute

    rnd, checkpoint = reward_round
    run = reward_run_create(name="rm", round_ids=[rnd.pk], init_checkpoint=checkpoint, aspects=["overall"],
                            launch=False)
    assert reward_run_cancel(run_id=run.pk).status == RewardRun.Status.CANCELLED
    assert reward_run_execute(run_id=run.pk) == RewardRun.Status.CANCELLED


def test_the_admin_lists_reward_runs_and_scores_and_cancels_through_the_service(reward_round, client):
    from django.contrib.auth import get_user_model

    from annotation.models import Candidate, RewardScore

    rnd, checkpoint = reward_round
    queued = reward_run_create(name="rm-queued", round_ids=[rnd.pk], init_checkpoint=checkpoint, aspects=["overall"],
                               launch=False)
    done = RewardRun.objects.create(name="rm-done", init_checkpoint=checkpoint, status=RewardRun.Status.DONE)
    RewardScore.objects.create(run=done, candidate=Candidate.objects.filter(group__round=rnd).first(),
                               scores={"overall": 0.5})
    client.force_login(get_user_model().objects.create_superuser("boss", "boss@example.org", "pw-admin-1"))
    page = client.get("/admin/annotation/rewardrun/").content.decode()
    assert "rm-queued" in page and "rm-done" in page and 'value="reward_run_cancel_action"' in page
    assert client.get(f"/admin/annotation/rewardrun/{queued.pk}/change/").status_code == 200
    assert client.get("/admin/annotation/rewardrun/add/").status_code == 403  # launched from the research page
    assert client.get("/admin/annotation/rewardscore/").status_code == 200
    res = client.post("/admin/annotation/rewardrun/", {"action": "reward_run_cancel_action",
                                                        "_selected_action": [queued.pk, done.pk]}, follow=True)
    assert RewardRun.objects.get(pk=queued.pk).status == RewardRun.Status.CANCELLED
    assert RewardRun.objects.get(pk=done.pk).status == RewardRun.Status.DONE  # refused in words, not a 500
    assert res.status_code == 200 and "1 run(s) cancelled" in res.content.decode()
