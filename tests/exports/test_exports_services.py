"""export_create / export_run: validation before anything is created, filters, versions, hashes, constant queries."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotation.exports.filters import ERR_MIN_AGREEMENT, ERR_UNKNOWN_KEYS
from annotation.models import Export, PreferencePair
from annotation.services.exports import ExportError, export_create, export_run

pytestmark = pytest.mark.django_db


def create_run(format="trl", filter=None, **kw) -> Export:
    export = export_create(format=format, filter=filter or {}, actor=None, enqueue=False)
    return export_run(export_id=export.pk, **kw)


def test_empty_result_is_refused_before_anything_is_created(loop, sent_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ExportError, match="Nothing to export: no preference pairs match this filter") as exc:
        export_create(format="trl", filter={"min_agreement": 1.0, "min_annotators": 5}, actor=loop.researcher)
    assert "agreement >= 1" in str(exc.value) and "annotators >= 5" in str(exc.value)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ExportError, match="no judgments match"):
        export_create(format="raw", filter={"date_to": "2001-01-01"}, actor=loop.researcher)
    assert Export.objects.count() == 0 and sent_tasks == []


@pytest.mark.parametrize(
    "filter, message",
    [
        ({"min_agreement": 2}, ERR_MIN_AGREEMENT),
        ({"colour": "red"}, ERR_UNKNOWN_KEYS.split(":")[0]),
        ({"rounds": [999999]}, "Unknown round id(s): 999999"),
        ({"rounds": "a,b"}, "rounds must be a list"),
        ({"source": "crowd"}, "source must be one or more of"),
        ({"date_from": "2026-13-01"}, "date_from must be a date"),
        ({"date_from": "2026-02-01", "date_to": "2026-01-01"}, "is after date_to"),
        ({"min_annotators": 0}, "min_annotators must be a whole number"),
    ],
)
def test_bad_filters_have_clear_messages(loop, filter, message):
    with pytest.raises(ExportError) as exc:
        export_create(format="trl", filter=filter, actor=None, enqueue=False)
    assert message in str(exc.value)
    assert Export.objects.count() == 0


def test_raw_refuses_pair_only_filters(loop):
    with pytest.raises(ExportError, match="min_agreement applies to preference pairs"):
        export_create(format="raw", filter={"min_agreement": 0.5}, actor=None, enqueue=False)


def test_create_queues_on_commit(loop, sent_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        export = export_create(format="manifest", filter={"rounds": [loop.gen_round.pk]}, actor=loop.researcher)
    assert sent_tasks == []  # nothing is sent before the transaction commits
    for callback in callbacks:
        callback()
    assert sent_tasks == [("annotation.tasks_exports.export_run", (export.pk,), "default")]
    assert export.status == Export.Status.QUEUED and export.filter == {"rounds": [loop.gen_round.pk]}
    assert export.created_by == loop.researcher


def test_filters_select_the_right_pairs(loop):
    assert create_run(filter={"rounds": [loop.eval_round.pk]}).row_count == 4
    assert create_run(filter={"rounds": str(loop.gen_round.pk)}).row_count == 10
    expected = PreferencePair.objects.filter(agreement__gte=0.6).count()
    assert 0 < expected < 14
    every = {"include_evaluation": True}  # evaluation rounds too (left out unless included or named)
    assert create_run(filter={"min_agreement": 0.6, **every}).row_count == expected
    assert create_run(filter={"min_annotators": 3, **every}).row_count == 14
    assert create_run(filter={"min_annotators": 3}).row_count == 10
    PreferencePair.objects.filter(round=loop.eval_round).update(source=PreferencePair.Source.MODEL)
    assert create_run(filter={"source": ["model"], **every}).row_count == 4
    old = timezone.now() - dt.timedelta(days=10)
    PreferencePair.objects.filter(round=loop.eval_round).update(created_at=old)
    day = old.date().isoformat()
    assert create_run(filter={"date_from": day, "date_to": day, **every}).row_count == 4
    assert create_run(filter={"date_from": (old.date() + dt.timedelta(days=1)).isoformat()}).row_count == 10
    raw = create_run("raw", filter={"rounds": [loop.eval_round.pk]})
    assert raw.row_count == 4 * 3 * 2 and raw.datasheet["annotators"] == 3


def test_versions_and_identical_content_hash(loop):
    first = create_run("trl_parquet")
    second = create_run("trl_parquet", chunk_size=3)  # many small chunks, same bytes
    assert (first.version, second.version) == (1, 2)
    assert second.content_hash == first.content_hash
    assert second.datasheet["identical_to_version"] == 1
    PreferencePair.objects.filter(pk=PreferencePair.objects.order_by("id").first().pk).update(weight=0.25)
    third = create_run("trl_parquet")
    assert third.version == 3 and third.content_hash != first.content_hash
    assert create_run("manifest").version == 1  # versions count per format


def test_run_is_idempotent(loop):
    export = create_run("pickapic")
    finished_at = export.finished_at
    again = export_run(export_id=export.pk)
    assert again.finished_at == finished_at and again.content_hash == export.content_hash


@pytest.mark.parametrize("format", ["trl_parquet", "pickapic", "hf_datasets", "raw"])
def test_queries_do_not_grow_with_rows(loop, format):
    """A fixed number of queries per chunk: no per-row query (no N+1)."""
    from tests.exports.factories import build_loop

    def count() -> int:
        export = export_create(format=format, filter={}, actor=None, enqueue=False)
        with CaptureQueriesContext(connection) as ctx:
            export_run(export_id=export.pk)
        return len(ctx.captured_queries)

    small = count()
    build_loop(n_prompts=6, tag="-b")  # 2.5x the rows, still one chunk
    assert count() == small


def test_failure_is_recorded(loop, monkeypatch):
    export = export_create(format="trl", filter={}, actor=None, enqueue=False)

    def boom(**kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("annotation.services.exports.artifact_write", boom)
    with pytest.raises(OSError):
        export_run(export_id=export.pk)
    export.refresh_from_db()
    assert export.status == Export.Status.FAILED and "disk full" in export.error


def test_management_command(loop, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "manifest.parquet"
    call_command("export_preferences", "--format", "manifest", "--out", str(out), "--rounds", str(loop.gen_round.pk),
                 "--min-annotators", "2", "--user", loop.researcher.username, stdout=(buf := __import__("io").StringIO()))
    summary = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert summary["rows"] == 10 == pq.read_metadata(out).num_rows
    sheet = json.loads((tmp_path / "manifest.parquet.datasheet.json").read_text())
    assert sheet["content_hash"] == summary["sha256"] and loop.researcher.username not in json.dumps(sheet)
    call_command("export_preferences", "--format", "hf_datasets", "--out", str(tmp_path / "hf"), stdout=buf)
    assert (tmp_path / "hf" / "README.md").exists() and (tmp_path / "hf" / "datasheet.json").exists()
    with pytest.raises(CommandError, match="Nothing to export"):
        call_command("export_preferences", "--format", "trl", "--out", str(tmp_path / "x.jsonl"),
                     "--min-agreement", "1", "--min-annotators", "9")
