"""Evaluation data stays out of training (issue 18 item 8): evaluation rounds are left out of default exports and
refused by DPO runs unless explicitly included, with a visible warning on the pages; the DPO form keeps every
choice after a refusal (item 10)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from annotation.exports.filters import filter_parse
from annotation.models import DPORun, Export
from annotation.selectors.exports import pair_queryset_for_export
from annotation.services.dpo_runs import ERR_EVALUATION_ROUNDS, dpo_run_create
from annotation.services.exports import export_create, export_run


@pytest.fixture
def checkpoints_ok(monkeypatch):
    monkeypatch.setattr("annotation.services.candidates.checkpoint_validate", lambda checkpoint: None)


def _rounds(flt: dict) -> set[int]:
    qs = pair_queryset_for_export(flt=filter_parse(flt, format=Export.Format.TRL), format=Export.Format.TRL)
    return set(qs.values_list("round_id", flat=True))


def test_default_export_leaves_evaluation_rounds_out(loop):
    assert _rounds({}) == {loop.gen_round.pk}
    assert _rounds({"include_evaluation": True}) == {loop.gen_round.pk, loop.eval_round.pk}
    assert _rounds({"rounds": [loop.eval_round.pk]}) == {loop.eval_round.pk}  # naming it includes it
    assert filter_parse({}).as_json() == {}  # older filters keep their stored JSON
    assert filter_parse({"include_evaluation": "on"}).as_json() == {"include_evaluation": True}
    export = export_create(format="trl", filter={}, actor=None, enqueue=False)
    export_run(export_id=export.pk)
    export.refresh_from_db()
    eval_pairs = loop.eval_round.pairs.count()
    assert export.row_count == loop.gen_round.pairs.count() and eval_pairs > 0


def test_dpo_run_refuses_evaluation_rounds_unless_included(loop, checkpoints_ok):
    with pytest.raises(ValidationError) as info:
        dpo_run_create(name="leak", round_ids=[loop.eval_round.pk], init_checkpoint=loop.base, launch=False)
    assert ERR_EVALUATION_ROUNDS.split(":")[1].strip()[:40] in str(info.value)
    assert not DPORun.objects.exists()
    run = dpo_run_create(name="explicit", round_ids=[loop.eval_round.pk], init_checkpoint=loop.base, launch=False,
                         include_evaluation=True)
    assert run.pair_filter["include_evaluation"] is True


def test_pages_warn_and_the_dpo_form_keeps_every_choice(client, loop, checkpoints_ok):
    client.force_login(loop.researcher)
    page = client.get(f"/research/rounds/{loop.eval_round.pk}/").content.decode()
    assert 'id="evaluation-warning"' in page and "Train on this round" not in page
    assert "Train on this round" in client.get(f"/research/rounds/{loop.gen_round.pk}/").content.decode()
    form = client.get("/research/dpo-runs/new/").content.decode()
    assert "evaluation round: held-out prompts" in form and 'name="include_evaluation"' in form
    data = {"name": "my-run", "rounds": [str(loop.eval_round.pk)], "init_checkpoint": str(loop.dpo.pk),
            "reference_checkpoint": str(loop.base.pk), "min_agreement": "0.5", "min_annotators": "2",
            "weighting": "uniform", "config_preset": "tiny-cpu", "use_lora": "1",
            "config_overrides": '{"max_steps": 7}'}
    page = client.post("/research/dpo-runs/new/", data).content.decode()
    assert "evaluation round(s)" in page and not DPORun.objects.exists()
    assert 'value="my-run"' in page and "value=\"{&quot;max_steps&quot;: 7}\"" in page
    assert f'value="{loop.eval_round.pk}" checked' in page
    assert f'<option value="{loop.dpo.pk}" selected>' in page and f'<option value="{loop.base.pk}" selected>' in page
    assert '<option value="uniform" selected>' in page and 'name="use_lora" value="1" checked' in page
    assert 'name="min_agreement" type="number" min="0" max="1" step="0.05" value="0.5"' in page
    exports_form = client.get("/research/exports/").content.decode()
    assert 'name="include_evaluation"' in exports_form
    # an export's filter reads the same in people's words on the list and its own page, queued or finished
    from annotation.services.exports import export_create, export_run

    queued = export_create(format="videoalign", filter={"min_agreement": 0.5}, actor=None, enqueue=False)
    for page in (client.get("/research/exports/"), client.get(f"/research/exports/{queued.pk}/")):
        assert "every round except evaluation rounds; agreement &gt;= 0.5" in page.content.decode()
        assert "{&#x27;min_agreement&#x27;" not in page.content.decode()
    export_run(export_id=queued.pk)
    assert "Filter: every round except evaluation rounds; agreement &gt;= 0.5" in client.get(
        f"/research/exports/{queued.pk}/").content.decode()
    from annotation.models import Export

    Export.objects.filter(pk=queued.pk).update(filter=["<b>x</b>"], datasheet="junk")  # rows no form writes
    for url in ("/research/exports/", f"/research/exports/{queued.pk}/"):
        res = client.get(url)
        assert res.status_code == 200 and "[&quot;&lt;b&gt;x&lt;/b&gt;&quot;]" in res.content.decode()
