"""Launch forms in users' words (new-user walk): the round form reports every field's problem at once with the form's
labels and sane upper bounds, never raw Python exception text; the DPO form and API validate everything (name,
rounds, pairs) before anything is saved or queued, say "1 pair", and warn on very few pairs."""

from __future__ import annotations

import pytest

from annotation.models import Checkpoint, DPORun, Export, Prompt, Round
from annotation.services import candidates
from annotation.services.accounts import user_create
from annotation.services.dpo_runs import ERR_NO_NAME, ERR_NO_ROUNDS
from tests.exports.factories import build_loop


@pytest.fixture
def researcher(db):
    return user_create(username="res", password="pw-research-1", roles=["researcher"])


@pytest.fixture
def checkpoint(db, tmp_path):
    return Checkpoint.objects.create(name="base", uri=str(tmp_path / "missing-root"), preset="tiny")


@pytest.fixture
def prompts(db):
    for i in range(5):
        Prompt.objects.create(text=f"a kite over the sea, take {i}", text_hash=f"kite-{i}")


@pytest.fixture
def checkpoints_ok(monkeypatch):
    monkeypatch.setattr("annotation.services.candidates.checkpoint_validate", lambda checkpoint: None)


def _errors(response) -> list[str]:
    import re

    html = response.content.decode()
    box = re.search(r'<ul class="error" id="(?:round|run)-errors" role="alert">(.*?)</ul>', html, re.S)
    assert box, "no error list on the page"
    return [re.sub(r"&quot;|&#x27;", '"', li) for li in re.findall(r"<li>(.*?)</li>", box.group(1), re.S)]


def test_round_form_reports_every_field_at_once_with_labels(client, researcher, checkpoint, prompts):
    client.force_login(researcher)
    data = {"name": "r1", "checkpoint": checkpoint.pk, "seeds_per_prompt": "1000", "num_frames": "99999",
            "height": "7", "width": "-5", "annotators_per_group": "0", "gold_rate": "5"}
    errors = _errors(client.post("/research/rounds/new/", data))
    text = "\n".join(errors)
    assert f"Seeds per prompt (K): must be between 2 and {candidates.MAX_SEEDS_PER_PROMPT} (got 1000)." in errors
    assert f"Frames: must be at most {candidates.MAX_FRAMES} (got 99999)." in errors
    assert any(e.startswith("Height and width: must be positive multiples of") for e in errors)
    assert any(e.startswith("k annotators per group: must be between 1 and") and "(got 0)" in e for e in errors)
    assert "Gold rate: must be between 0 and 1 (got 5.0)." in errors
    assert "seeds_per_prompt" not in text and "num_frames" not in text and "gold_rate" not in text
    assert "Constraint" not in text and not Round.objects.exists()
    one = _errors(client.post("/research/rounds/new/", {**data, "seeds_per_prompt": "1"}))
    assert f"Seeds per prompt (K): must be between 2 and {candidates.MAX_SEEDS_PER_PROMPT} (got 1)." in one


@pytest.mark.parametrize("extra, expected", [
    ({"sample_size": "-3"}, "Sample size must be a whole number from 1 to 100000 (at most every one of the 5 prompts "
                            "that match is drawn), or 0 for all; got -3."),
    ({"sampler": "custom", "num_steps": "", "cfg_scale": "5", "shift": "13"}, "Steps: enter a whole number"),
    ({"seeds_per_prompt": "two"}, "Seeds per prompt (K): enter a whole number"),
    ({"gold_rate": "nan"}, "Gold rate: enter a number"),
])
def test_round_form_bad_values_read_as_users_words(client, researcher, checkpoint, prompts, extra, expected):
    client.force_login(researcher)
    response = client.post("/research/rounds/new/", {"name": "r1", "checkpoint": checkpoint.pk, **extra})
    errors = _errors(response)
    assert response.status_code == 200 and expected in errors
    assert not any("Invalid value" in e or "invalid literal" in e or "population" in e for e in errors)
    assert not Round.objects.exists()


def test_empty_dpo_form_is_refused_before_anything_is_queued(client, db, checkpoints_ok, sent_tasks):
    loop = build_loop(n_prompts=1)
    client.force_login(loop.researcher)
    response = client.post("/research/dpo-runs/new/", {"name": "", "init_checkpoint": str(loop.base.pk),
                                                       "config_preset": "tiny-cpu", "min_agreement": "0.25"})
    errors = _errors(response)
    assert f"Name: {ERR_NO_NAME}" in errors and f"Pairs from rounds: {ERR_NO_ROUNDS}" in errors
    assert not DPORun.objects.exists() and not Export.objects.exists() and not sent_tasks
    page = response.content.decode()
    assert f'<option value="{loop.base.pk}" selected>' in page and 'value="0.25"' in page  # choices kept
    bad_json = _errors(client.post("/research/dpo-runs/new/", {"name": "x", "init_checkpoint": str(loop.base.pk),
                                                               "rounds": [str(loop.gen_round.pk)],
                                                               "config_overrides": "{not json"}))
    assert bad_json == ['Config overrides must be a JSON object, e.g. {"max_steps": 100}']
    # a name the output checkpoint could not take is refused now, not after training
    taken = _errors(client.post("/research/dpo-runs/new/", {"name": loop.dpo.name, "init_checkpoint": str(loop.base.pk),
                                                            "rounds": [str(loop.gen_round.pk)]}))
    assert any(e.startswith("Name: A checkpoint named") for e in taken) and not DPORun.objects.exists()


def test_dpo_run_on_few_pairs_is_accepted_with_a_warning_and_plural(client, db, checkpoints_ok, sent_tasks):
    loop = build_loop(n_prompts=1)
    client.force_login(loop.researcher)
    n = loop.gen_round.pairs.count()
    assert 0 < n < 8
    response = client.post("/research/dpo-runs/new/", {"name": "tiny-run", "init_checkpoint": str(loop.base.pk),
                                                       "rounds": [str(loop.gen_round.pk)]}, follow=True)
    page = response.content.decode()
    run = DPORun.objects.get()
    assert f"DPO run tiny-run queued on {run.pairs_count} pair{'s' if run.pairs_count != 1 else ''}." in page
    assert 'id="run-warning"' in page and f"Only {run.pairs_count} usable preference pair" in page
    assert " 1 pairs" not in page
    form = client.get("/research/dpo-runs/new/").content.decode()
    assert loop.eval_round.pairs.count() == 1  # the round list says "1 pair", not "1 pairs"
    assert f"{loop.eval_round.name} (1 pair)" in form and " 1 pairs" not in form


def test_dpo_api_refuses_a_blank_name_and_no_rounds(client, db, checkpoints_ok, sent_tasks):
    loop = build_loop(n_prompts=1)
    client.force_login(loop.researcher)
    for body in ({"name": "  ", "round_ids": [loop.gen_round.pk], "init_checkpoint": loop.base.pk},
                 {"name": "x", "round_ids": [], "init_checkpoint": loop.base.pk}):
        response = client.post("/api/dpo-runs/create/", body, content_type="application/json")
        assert response.status_code == 400, response.content
    assert not DPORun.objects.exists() and not sent_tasks
    response = client.post("/api/dpo-runs/create/", {"name": "few", "round_ids": [loop.gen_round.pk],
                                                     "init_checkpoint": loop.base.pk}, content_type="application/json")
    assert response.status_code == 201 and "usable preference pairs" in response.json()["warnings"][0]
