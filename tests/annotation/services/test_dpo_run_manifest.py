"""A DPO run's training data is a manifest export: one schema, one writer, the same bytes as an export of the same
filter by hand; weighting and left-out pairs (no latent or text embedding) agree between the run and the export."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from annotation import storage
from annotation.models import Candidate, DPORun, Export, PreferencePair
from annotation.services.dpo_runs import dpo_run_create
from annotation.services.exports import export_artifact_key, export_create, export_run
from tests.exports.factories import build_loop


@pytest.fixture
def loop(db, monkeypatch):
    monkeypatch.setattr("annotation.services.candidates.checkpoint_validate", lambda checkpoint: None)
    return build_loop(n_prompts=4)


def _artifact(export: Export) -> bytes:
    return storage.object_read(key=export_artifact_key(export=export))


@pytest.mark.parametrize("weighting", ["agreement", "stored", "uniform"])
def test_run_manifest_is_byte_identical_to_the_export_of_its_filter(loop, weighting, sent_tasks,
                                                                     django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = dpo_run_create(name=f"run-{weighting}", round_ids=[loop.gen_round.pk], init_checkpoint=loop.base,
                             weighting=weighting)
    assert sent_tasks == [("generation_workers.tasks.dpo_run_execute", (run.pk,), "train")]
    assert run.manifest_export.format == Export.Format.MANIFEST
    assert run.manifest_export.filter == {"rounds": [loop.gen_round.pk], "min_agreement": 0.0, "min_annotators": 1,
                                          "source": ["human", "reviewer"],  # pseudo-labels only when asked
                                          **({} if weighting == "stored" else {"weighting": weighting})}
    trained_on = export_run(export_id=run.manifest_export_id)  # what the worker runs first
    by_hand = export_run(export_id=export_create(format="manifest", filter=dict(run.manifest_export.filter),
                                                 actor=None, enqueue=False).pk)
    assert by_hand.version == trained_on.version + 1
    assert _artifact(trained_on) == _artifact(by_hand) and trained_on.content_hash == by_hand.content_hash
    table = pq.read_table(io.BytesIO(_artifact(trained_on)))
    assert table.schema.field("pair_id").type == "int64" and table.num_rows == run.pairs_count
    pairs = {p.pk: p for p in PreferencePair.objects.filter(round=loop.gen_round)}
    expected = {"agreement": lambda p: p.agreement, "stored": lambda p: p.weight, "uniform": lambda p: 1.0}[weighting]
    rows = table.to_pylist()
    assert {r["pair_id"] for r in rows} == set(pairs)
    assert all(r["weight"] == pytest.approx(expected(pairs[r["pair_id"]])) for r in rows)
    if weighting != "uniform":
        assert len({r["weight"] for r in rows}) > 1  # the weighting is visible in the data, not a constant


def test_pairs_without_latents_or_text_embeddings_are_left_out_of_run_and_export_alike(loop):
    pair = PreferencePair.objects.filter(round=loop.gen_round).order_by("id").first()
    Candidate.objects.filter(pk=pair.chosen_id).update(text_embedding_uri="")
    dropped = PreferencePair.objects.filter(round=loop.gen_round).filter(chosen_id=pair.chosen_id).count()
    total = PreferencePair.objects.filter(round=loop.gen_round).count()
    run = dpo_run_create(name="run", round_ids=[loop.gen_round.pk], init_checkpoint=loop.base, launch=False)
    assert run.pairs_count == total - dropped and run.pair_filter["left_out"] == dropped
    rows = pq.read_table(io.BytesIO(_artifact(export_run(export_id=run.manifest_export_id)))).to_pylist()
    assert len(rows) == run.pairs_count and pair.pk not in {r["pair_id"] for r in rows}


def test_a_refused_run_creates_no_export(loop):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="No usable preference pairs"):
        dpo_run_create(name="run", round_ids=[loop.gen_round.pk], init_checkpoint=loop.base, min_annotators=9)
    assert not Export.objects.exists() and not DPORun.objects.exists()
