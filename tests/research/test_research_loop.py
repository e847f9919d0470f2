"""The researcher's loop: permissions, prompt import report, round validation and state machine, DPO-run launch
validation, metrics and lineage pages."""

from __future__ import annotations

import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.models import Checkpoint, DPOMetric, DPORun, Prompt, Round, RoundEvent
from annotation.services import dpo_runs, prompts, rounds
from annotation.services.accounts import user_create

RESEARCH_URLS = ["/research/", "/research/prompts/import/", "/research/rounds/new/", "/research/dpo-runs/new/"]


@pytest.fixture
def researcher(db):
    return user_create(username="res", password="pw-research-1", roles=["researcher"])


@pytest.fixture
def checkpoint(db, tmp_path):
    return Checkpoint.objects.create(name="base", uri=str(tmp_path / "missing-root"), preset="tiny")


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["annotator", "reviewer"])
def test_annotators_and_reviewers_cannot_reach_research_pages(client, role):
    user_create(username=role, password="pw-role-1", roles=[role])
    client.login(username=role, password="pw-role-1")
    for url in RESEARCH_URLS:
        assert client.get(url).status_code == 403, url


def test_research_pages_load_for_researchers(client, researcher):
    client.login(username="res", password="pw-research-1")
    for url in RESEARCH_URLS:
        assert client.get(url).status_code == 200, url


def test_prompt_import_reports_line_numbers_and_imports_nothing(client, researcher):
    client.login(username="res", password="pw-research-1")
    bad = "text,category\nA cat on a sofa,animals\n,food\nA dog,unknown-cat\n一只猫,animals\n".encode()
    response = client.post("/research/prompts/import/", {"file": SimpleUploadedFile("p.csv", bad)})
    body = response.content.decode()
    assert "2 rejected" in body and prompts.ERR_EMPTY in body and "unknown category" in body
    assert Prompt.objects.count() == 0  # nothing half-imported
    good = "text,category\nA cat on a sofa,animals\n一只猫在睡觉,animals\n".encode()
    client.post("/research/prompts/import/", {"file": SimpleUploadedFile("p.csv", good)})
    assert sorted(Prompt.objects.values_list("language", flat=True)) == ["en", "zh"]
    # re-import: duplicates on normalized text are skipped
    report = prompts.prompts_import(data=b"  a CAT on a   sofa \n", fmt="txt")
    assert (report.created, report.duplicates) == (0, 1)


def test_prompt_import_rejects_malformed_jsonl_and_non_utf8(db):
    report = prompts.prompts_import(data=b'{"text": "ok"}\nnot json\n', fmt="jsonl")
    assert report.rejected[0]["line"] == 2 and not Prompt.objects.exists()
    report = prompts.prompts_import(data="été".encode("latin-1"), fmt="txt")
    assert report.rejected == [{"line": 1, "error": prompts.ERR_NOT_UTF8}]


def test_round_with_missing_checkpoint_and_no_prompts_is_refused_before_anything(researcher, checkpoint):
    with pytest.raises(ValidationError) as info:
        rounds.round_create(name="r", policy_checkpoint=checkpoint, prompt_ids=[], num_frames=20, height=30, launch=True)
    text = " ".join(info.value.messages)
    assert "missing" in text and "no prompts" in text and "num_frames must be" in text and "multiples of" in text
    assert not Round.objects.exists()


def test_round_form_shows_the_validation_errors(client, researcher, checkpoint):
    client.login(username="res", password="pw-research-1")
    response = client.post("/research/rounds/new/", {"name": "r1", "checkpoint": checkpoint.id, "num_frames": "20"})
    assert response.status_code == 200 and b"round-errors" in response.content and not Round.objects.exists()


def test_round_state_machine_guards_and_records(researcher, checkpoint):
    round = Round.objects.create(name="r", policy_checkpoint=checkpoint, num_steps=2, cfg_scale=5, shift=13,
                                 height=64, width=64, num_frames=17)
    with pytest.raises(ValidationError, match="cannot go from draft to training"):
        rounds.round_transition(round_id=round.id, to_status=Round.Status.TRAINING, actor=researcher)
    rounds.round_transition(round_id=round.id, to_status=Round.Status.GENERATING, actor=researcher)
    rounds.round_transition(round_id=round.id, to_status=Round.Status.CANCELLED, actor=researcher, note="stop")
    with pytest.raises(ValidationError, match=r"allowed: none \(final\)"):
        rounds.round_transition(round_id=round.id, to_status=Round.Status.GENERATING)
    events = list(RoundEvent.objects.filter(round=round).values_list("from_status", "to_status", "actor__username"))
    assert events == [("draft", "generating", "res"), ("generating", "cancelled", "res")]
    round.refresh_from_db()
    assert round.started_at and round.finished_at


def test_dpo_run_with_zero_pairs_is_refused(researcher, checkpoint, monkeypatch):
    monkeypatch.setattr("annotation.services.candidates.checkpoint_validate", lambda checkpoint: None)
    round = Round.objects.create(name="r", policy_checkpoint=checkpoint, num_steps=2, cfg_scale=5, shift=13,
                                 height=64, width=64, num_frames=17)
    with pytest.raises(ValidationError, match="No usable preference pairs"):
        dpo_runs.dpo_run_create(name="run", round_ids=[round.id], init_checkpoint=checkpoint)
    assert not DPORun.objects.exists()


def test_dpo_run_reference_choice_is_validated(researcher, checkpoint):
    """A fixed reference different from the start needs a frozen copy and the same model preset; nothing is created."""
    policy = Checkpoint.objects.create(name="dpo-1", uri=checkpoint.uri, preset="tiny", parent=checkpoint)
    other = Checkpoint.objects.create(name="big", uri=checkpoint.uri, preset="stepvideo-t2v")
    round = Round.objects.create(name="r", policy_checkpoint=policy, num_steps=2, cfg_scale=5, shift=13,
                                 height=64, width=64, num_frames=17)
    with pytest.raises(ValidationError, match="reference is the starting checkpoint itself"):
        dpo_runs.dpo_run_create(name="run", round_ids=[round.id], init_checkpoint=policy,
                                reference_checkpoint=checkpoint, use_lora=True)
    with pytest.raises(ValidationError, match="'stepvideo-t2v' checkpoint but the run starts from a 'tiny' one"):
        dpo_runs.dpo_run_create(name="run", round_ids=[round.id], init_checkpoint=policy, reference_checkpoint=other)
    # LoRA with an explicit frozen copy may keep a separate reference; it then fails later only for the missing root
    with pytest.raises(ValidationError) as info:
        dpo_runs.dpo_run_create(name="run", round_ids=[round.id], init_checkpoint=policy, reference_checkpoint=checkpoint,
                                use_lora=True, config_overrides={"reference_mode": "frozen_copy"})
    assert "reference is the starting checkpoint itself" not in str(info.value)
    assert not DPORun.objects.exists()


def test_dpo_run_page_draws_curves_and_lineage(client, researcher, checkpoint):
    run = DPORun.objects.create(name="run-1", init_checkpoint=checkpoint, reference_checkpoint=checkpoint, progress_total=3)
    for step, loss in enumerate([0.693, 0.65, 0.61], start=1):
        assert dpo_runs.dpo_run_record_metrics(run_id=run.id, metrics={"step": step, "loss": loss, "rewards/accuracies": 0.5 + step / 10, "round": None}) is False
    assert DPOMetric.objects.filter(run=run).count() == 3
    run = dpo_runs.dpo_run_finish(run_id=run.id, status=DPORun.Status.DONE, output_uri="file:///nonexistent/run-1/final", summary={"loss": 0.61})
    assert run.output_checkpoint.parent == checkpoint and run.output_checkpoint.reference == checkpoint
    client.login(username="res", password="pw-research-1")
    page = client.get(f"/research/dpo-runs/{run.id}/").content.decode()
    curves = json.loads(re.search(r'<script id="curve-loss" type="application/json">(.*?)</script>', page).group(1))
    assert curves["kind"] == "line" and curves["x_label"] == "step" and curves["y_label"] == "loss"
    assert curves["series"] == [{"name": "run-1", "points": [[1.0, 0.693], [2.0, 0.65], [3.0, 0.61]]}]
    assert re.search(r"<td>loss</td><td>0\.61</td>", page)  # the last value, rounded for people
    assert "<td>round</td>" not in page  # an unset value is left out, not shown as None
    lineage = client.get(f"/research/checkpoints/{run.output_checkpoint.id}/").content.decode()
    assert "run-1" in lineage and "base" in lineage
    # cancel of a finished run is refused with a message
    with pytest.raises(ValidationError, match="only queued or running runs can be cancelled"):
        dpo_runs.dpo_run_cancel(run_id=run.id)


def test_average_and_evaluate_refuse_bad_requests_with_messages(client, researcher, checkpoint):
    from annotation.services import checkpoints as ck

    client.login(username="res", password="pw-research-1")
    response = client.post("/research/checkpoints/average/", {"checkpoints": [checkpoint.id], "name": "avg"}, follow=True)
    assert ck.ERR_AVERAGE_COUNT in response.content.decode()
    response = client.post(f"/research/checkpoints/{checkpoint.id}/evaluate/", {}, follow=True)
    assert "has no reference or parent" in response.content.decode()
    child = Checkpoint.objects.create(name="child", uri=checkpoint.uri, preset="tiny", parent=checkpoint, kind="dpo")
    response = client.post(f"/research/checkpoints/{child.id}/evaluate/", {}, follow=True)
    assert ck.ERR_NO_HELD_OUT.split(":")[0] in response.content.decode()
    assert not Round.objects.exists()


def test_the_demo_pool_has_held_out_prompts_and_an_evaluation_round_fits_the_annotators(checkpoint, monkeypatch,
                                                                                         sent_tasks):
    """``seed_demo`` imports held-out world prompts (combinations the tiny-world model never trained on), so a
    checkpoint can be evaluated out of the box; k defaults to 3, or to the annotators there are (the demo's 2)."""
    from django.core.management import call_command

    from annotation.services import checkpoints as ck
    from model.world import grammar

    call_command("seed_demo", no_round=True, stdout=open("/dev/null", "w"))  # noqa: SIM115
    held = list(Prompt.objects.filter(is_held_out=True).values_list("text", flat=True))
    assert len(held) == 4 and all(grammar.is_held_out(grammar.parse(t)) for t in held)
    assert not Prompt.objects.filter(is_held_out=True, tags__contains=["demo"]).exists()  # not in the demo round
    # the shapes world's flaw tags; the ones no shapes clip can show are hidden on the demo's first run only
    from annotation.models import FlawTag

    active = set(FlawTag.objects.filter(is_active=True).values_list("slug", flat=True))
    assert {"wrong-colour", "wrong-count", "wrong-shape", "wrong-motion", "broken-object", "flicker"} <= active
    assert not active & {"distorted-face", "distorted-hands", "text-rendering"}
    FlawTag.objects.filter(slug="distorted-hands").update(is_active=True)  # an admin turns one back on
    call_command("seed_demo", no_round=True, stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert FlawTag.objects.get(slug="distorted-hands").is_active and FlawTag.objects.filter(slug="wrong-count").count() == 1
    monkeypatch.setattr("annotation.services.candidates.checkpoint_validate", lambda checkpoint: None)
    child = Checkpoint.objects.create(name="child", uri=checkpoint.uri, preset="tiny", parent=checkpoint, kind="dpo")
    rnd = ck.evaluation_round_create(checkpoint=child, name="eval-child")
    assert rnd.kind == Round.Kind.EVALUATION and rnd.annotators_per_group == 2  # annotator, annotator2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_checkpoint_average_job_on_a_real_worker(start_worker, tmp_path):
    import subprocess
    import sys

    import torch

    from annotation.services.checkpoints import checkpoint_average_create
    from model.checkpoint import load_dit

    roots = []
    for seed in (0, 1):
        root = tmp_path / f"ck{seed}"
        subprocess.run([sys.executable, "-m", "model", "make-tiny", "--out", str(root), "--seed", str(seed)], check=True)
        roots.append(Checkpoint.objects.create(name=f"ck{seed}", uri=str(root), preset="tiny"))
    start_worker(queues="train")
    checkpoint_average_create(checkpoint_ids=[c.id for c in roots], name="avg-01")
    import time

    for _ in range(240):
        if Checkpoint.objects.filter(name="avg-01").exists():
            break
        time.sleep(0.5)
    averaged = Checkpoint.objects.get(name="avg-01")
    assert averaged.kind == "averaged" and set(averaged.averaged_from.values_list("name", flat=True)) == {"ck0", "ck1"}
    a, b, m = (load_dit(r, dtype=torch.float32).state_dict() for r in (roots[0].uri, roots[1].uri, averaged.uri))
    key = "transformer_blocks.0.attn1.wqkv.weight"
    assert not torch.equal(a[key], b[key])
    torch.testing.assert_close(m[key], ((a[key] + b[key]) / 2).to(torch.bfloat16).float(), rtol=0, atol=1e-2)
