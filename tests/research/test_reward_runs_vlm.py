"""Reward-model runs with the video-language-model backbone, through the app: validated (the VLM folder, the aspects
a VideoAlign CSV has, pairs with both videos), trained by the job from the run's VideoAlign export (a tiny random
Qwen2-VL written by the test, LoRA), with its curve, held-out accuracy and lineage; a finished run scores a round's
candidates from their videos; a VLM folder that does not load fails the run with the file named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from django.core.exceptions import ValidationError

from annotation.models import Checkpoint, Export, PreferencePair, RewardMetric, RewardRun, RewardScore
from annotation.services.reward_runs import reward_run_create, reward_scores_request
from generation_workers.video import encode_mp4
from model.world import default_root, grammar
from model.world.render import render
from tests.annotation.factories import CandidateFactory, GroupFactory, PromptFactory, RoundFactory

pytestmark = pytest.mark.django_db
QUICK = {"steps": 80, "frames": 4, "lora_rank": 4, "batch": 8, "lr": 3e-3}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """40 world prompts, each a bright clip and the same clip dimmed, as mp4 files."""
    d = tmp_path_factory.mktemp("clips")
    out = []
    for i, prompt in enumerate(grammar.sample_prompts(40, seed=3, lang="en")):
        clip = render(prompt, seed=i, size=64)
        encode_mp4(clip, d / f"{i}-bright.mp4", fps=8)
        encode_mp4((clip * 0.45).astype(np.uint8), d / f"{i}-dim.mp4", fps=8)
        out.append((prompt, (d / f"{i}-bright.mp4").as_uri(), (d / f"{i}-dim.mp4").as_uri()))
    return out


@pytest.fixture
def vlm_round(clips, tmp_path, settings):
    """A round with per-aspect judgments: per prompt the bright clip is preferred and better on visual quality (a
    planted, learnable preference); text alignment is a coin flip (nothing to learn)."""
    settings.VIDEODPO = {**settings.VIDEODPO, "RUNS_DIR": str(tmp_path / "runs")}
    checkpoint = Checkpoint.objects.create(name="tiny-world", uri=str(default_root()), preset="tiny")
    rnd = RoundFactory(policy_checkpoint=checkpoint, aspect_judgments=True)
    rng = np.random.default_rng(0)
    for prompt, bright, dim in clips:
        group = GroupFactory(round=rnd, prompt=PromptFactory(text=prompt))
        good = CandidateFactory(group=group, video_uri=bright, fps=8.0, num_frames=17)
        bad = CandidateFactory(group=group, video_uri=dim, fps=8.0, num_frames=17)
        PreferencePair.objects.create(round=rnd, group=group, chosen=good, rejected=bad, n_annotators=1, votes_for=1,
                                      aspects={"vq": "chosen", "ta": str(rng.choice(["chosen", "rejected"]))})
    return rnd, checkpoint


def test_a_vlm_run_is_validated_trained_from_its_videoalign_export_and_scores_a_round(
        vlm_round, tiny_vlm, tmp_path, sent_tasks, django_capture_on_commit_callbacks):
    from generation_workers.training import reward_run_execute, reward_scores_round

    rnd, _ = vlm_round
    refusals = {
        "vlm_root": [{}, "needs the folder of the video language model"],
        "missing": [{"vlm_root": str(tmp_path / "nowhere")}, "no model folder with a config.json there"],
        "no config": [{"vlm_root": str(tmp_path)}, "no model folder with a config.json there"],  # the same words
        "too long": [{"vlm_root": "/tmp/" + "a" * 300}, "no model folder with a config.json there"],
        "longer than the field": [{"vlm_root": "a" * 5000}, "at most 1024 characters"],
        "newline": [{"vlm_root": "s3://bucket/m\nINJECT"}, "without control characters"],
        "scheme": [{"vlm_root": "https://example.com/qwen"}, "give a local path or an s3://bucket/prefix URI"],
        "s3 traversal": [{"vlm_root": "s3://bucket/../../../outside/x"}, "no '.' or '..' segments"],
        "s3 no bucket": [{"vlm_root": "s3:///"}, "give a local path or an s3://bucket/prefix URI"],
        "overall": [{"vlm_root": str(tiny_vlm), "aspects": ["overall", "vq"]}, "has no overall column"],
        "mq": [{"vlm_root": str(tiny_vlm), "aspects": ["vq", "mq"]}, "aspect 'mq' (motion quality): 0 of 40 pairs"],
        "backbone": [{"backbone": "clip"}, "Unknown backbone 'clip'"],
    }
    for case, (kwargs, message) in refusals.items():
        with pytest.raises(ValidationError) as exc:
            reward_run_create(name="vlm-rm", round_ids=[rnd.pk], **{"backbone": "vlm", **kwargs})
        assert message in str(exc.value), case
    assert not RewardRun.objects.exists() and not Export.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        run = reward_run_create(name="vlm-rm", round_ids=[rnd.pk], backbone="vlm", vlm_root=f"  {tiny_vlm} ",
                                aspects=["vq", "ta"], config_overrides=QUICK)
    assert sent_tasks == [("generation_workers.tasks.reward_run_execute", (run.pk,), "train")]
    assert run.init_checkpoint is None and run.vlm_root == str(tiny_vlm)
    assert run.manifest_export.format == Export.Format.VIDEOALIGN and run.aspect_pairs == {"vq": 40, "ta": 40}

    assert reward_run_execute(run_id=run.pk) == RewardRun.Status.DONE, RewardRun.objects.get().error
    run.refresh_from_db()
    held = run.metrics_summary["heldout"]
    assert held["vq"]["accuracy_no_ties"] >= 0.75 and run.metrics_summary["train"]["vq"]["accuracy_no_ties"] >= 0.8
    assert run.metrics_summary["lineage"]["manifest_export"]["sha256"] == run.manifest_export.content_hash
    meta = json.loads((Path(run.output_uri) / "reward.json").read_text())
    assert meta["kind"] == "vlm" and meta["lineage"]["vlm_root"] == str(tiny_vlm)
    steps = list(RewardMetric.objects.filter(run=run).values_list("step", flat=True))
    assert steps[-1] == 80 and run.progress_step == 80

    sent_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert reward_scores_request(run_id=run.pk, round_id=rnd.pk) == 80
    assert reward_scores_round(run_id=run.pk, round_id=rnd.pk) == 80 == RewardScore.objects.count()
    by_group: dict[int, dict[bool, float]] = {}
    for s in RewardScore.objects.select_related("candidate"):
        by_group.setdefault(s.candidate.group_id, {})["bright" in s.candidate.video_uri] = s.scores["vq"]
    assert sum(v[True] > v[False] for v in by_group.values()) >= 0.8 * len(by_group)
    assert set(RewardScore.objects.first().scores) == {"vq", "ta"}


def test_a_vlm_folder_that_does_not_load_fails_the_run_naming_the_file(vlm_round, tiny_vlm, tmp_path):
    from generation_workers.training import reward_run_execute

    rnd, _ = vlm_round
    broken = tmp_path / "broken-vlm"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_vlm / "config.json").read_text())  # no weights, no tokenizer
    run = reward_run_create(name="vlm-broken", round_ids=[rnd.pk], backbone="vlm", vlm_root=str(broken),
                            aspects=["vq"], config_overrides=QUICK, launch=False)
    assert reward_run_execute(run_id=run.pk) == RewardRun.Status.FAILED
    run.refresh_from_db()
    assert str(broken) in run.error and "\n" not in run.error


def test_the_new_run_page_offers_both_backbones(client, vlm_round, tiny_vlm, sent_tasks, settings):
    from annotation.services.accounts import user_create

    rnd, checkpoint = vlm_round
    settings.VIDEODPO = {**settings.VIDEODPO, "REWARD_VLM_ROOT": str(tiny_vlm)}
    client.force_login(user_create(username="res", password="pw-research-1", roles=["researcher"]))
    page = client.get("/research/reward-runs/new/").content.decode()
    assert 'name="backbone" value="vlm"' in page and f'value="{tiny_vlm}"' in page  # the configured folder offered
    form = {"name": "vlm-rm", "backbone": "vlm", "rounds": [rnd.pk], "aspects": ["overall", "vq"], "vlm_root": "",
            "steps": "20", "frames": "4", "lora_rank": "x"}
    res = client.post("/research/reward-runs/new/", form)
    assert res.status_code == 200 and "LoRA rank: enter a whole number" in res.content.decode()
    res = client.post("/research/reward-runs/new/", {**form, "lora_rank": "4", "backbone": "VLM"})
    assert "Unknown backbone &#x27;VLM&#x27;" in res.content.decode()  # not taken for the latent one
    res = client.post("/research/reward-runs/new/", {**form, "lora_rank": "4"})
    body = res.content.decode()
    assert res.status_code == 200 and "needs the folder of the video language model" in body
    assert "has no overall column" in body and not RewardRun.objects.exists()
    res = client.post("/research/reward-runs/new/", {**form, "lora_rank": "4", "vlm_root": str(tiny_vlm),
                                                     "aspects": ["vq", "ta"]})
    run = RewardRun.objects.get()
    assert res.status_code == 302 and run.backbone == "vlm" and run.config["lora_rank"] == 4
    detail = client.get(res["Location"]).content.decode()
    assert f'id="run-vlm-root">{tiny_vlm}</code>' in detail and "VideoAlign export" in detail
    assert "VLM" in client.get("/research/").content.decode()
