"""Issue 15, finding 6: imports above ``PROMPT_IMPORT_ASYNC_BYTES`` run as a background job (stored upload, streaming
parse, batched inserts, one transaction), with progress on the page and the same line-numbered report; the bulk API
answers 202 with a status URL; a repeated upload of the same file is recognised."""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from django.test import Client
from rest_framework.test import APIClient

from annotation.models import Category, Prompt, PromptImport
from annotation.services import prompt_imports
from annotation.services.prompt_imports import prompt_import_run
from tests.annotation.factories import UserFactory


def upload(client, content: bytes, name: str = "prompts.txt", **fields):
    f = io.BytesIO(content)
    f.name = name
    return client.post("/research/prompts/import/", {"file": f, **fields})


def txt(n: int, start: int = 0) -> bytes:
    return b"".join(b"a background prompt number %d about a red fox\n" % i for i in range(start, start + n))


@pytest.fixture
def researcher_client():
    client = Client()
    client.force_login(UserFactory(roles=["researcher"]))
    return client


@pytest.fixture
def small_threshold(settings):
    settings.PROMPT_IMPORT_ASYNC_BYTES = 1000
    return settings


def queued_job(res) -> PromptImport:
    assert res.status_code == 302, res.content[:500]
    match = re.search(r"/research/prompts/import/(\d+)/$", res["Location"])
    assert match, res["Location"]
    return PromptImport.objects.get(pk=int(match.group(1)))


# -- in-process runs of the job service (fast) -------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_big_upload_is_stored_queued_and_imported_in_batches(researcher_client, small_threshold, monkeypatch):
    monkeypatch.setattr(prompt_imports, "BATCH_ROWS", 7)  # several batches, and duplicates across batches
    content = txt(40) + b"\n" + txt(1, start=3)  # line 42 repeats line 4
    job = queued_job(upload(researcher_client, content))
    assert job.status == PromptImport.Status.QUEUED and job.size_bytes == len(content)
    assert not Prompt.objects.exists()  # nothing before the worker ran
    prompt_import_run(import_id=job.pk)
    job.refresh_from_db()
    assert job.status == PromptImport.Status.REJECTED
    assert job.report["rejected"] == [{"line": 42, "error": "duplicate of line 4 in this file"}]
    assert job.report["total"] == 41 and not Prompt.objects.exists()  # all or nothing
    page = researcher_client.get(f"/research/prompts/import/{job.pk}/").content.decode()
    assert "Nothing imported: 1 row rejected" in page and "<td>42</td>" in page

    job = queued_job(upload(researcher_client, txt(40)))
    prompt_import_run(import_id=job.pk)
    prompt_import_run(import_id=job.pk)  # idempotent: a finished job returns at once
    job.refresh_from_db()
    assert job.status == PromptImport.Status.DONE and job.report["created"] == 40 and job.progress == 1.0
    assert Prompt.objects.count() == 40


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_interrupted_job_runs_again_from_the_start(researcher_client, small_threshold):
    job = queued_job(upload(researcher_client, txt(30)))
    PromptImport.objects.filter(pk=job.pk).update(status=PromptImport.Status.RUNNING, progress=0.4, lines_done=12)
    prompt_import_run(import_id=job.pk)  # redelivered after a worker died: its transaction had rolled back
    job.refresh_from_db()
    assert job.status == PromptImport.Status.DONE and job.report["created"] == 30 and job.lines_done == 30


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_same_checks_and_report_as_the_synchronous_import(researcher_client, small_threshold):
    Category.objects.get_or_create(slug="animals", defaults={"name": "Animals"})
    rows = [{"text": f"a jsonl prompt {i} with a heron", "category": "animals"} for i in range(30)]
    rows[9] = {"text": "x" * 5000}
    rows[19] = {"text": "ok", "category": "nope"}
    lines = [json.dumps(r).encode() for r in rows]
    lines[24] = b"{not json"
    lines[27] = b'{"text": "nul \\u0000 inside"}'
    content = b"\n".join(lines) + b"\n"
    job = queued_job(upload(researcher_client, content, name="p.jsonl"))
    prompt_import_run(import_id=job.pk)
    job.refresh_from_db()
    lines_rejected = [r["line"] for r in job.report["rejected"]]
    assert lines_rejected == [10, 20, 25, 28], job.report
    assert job.report["rejected_count"] == 4 and job.report["total"] == 30
    from annotation.services.prompts import prompts_import

    sync = prompts_import(data=content, fmt="jsonl", dry_run=True)
    assert [r["line"] for r in sync.rejected] == lines_rejected
    assert [r["error"] for r in sync.rejected] == [r["error"] for r in job.report["rejected"]]
    assert not Prompt.objects.exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_not_utf8_and_csv_and_dry_run(researcher_client, small_threshold):
    job = queued_job(upload(researcher_client, txt(30) + b"caf\xe9\n" + txt(5, start=100)))
    prompt_import_run(import_id=job.pk)
    job.refresh_from_db()
    assert job.status == PromptImport.Status.REJECTED
    assert job.report["rejected"] == [{"line": 31, "error": "the file is not UTF-8 text"}]
    csv_content = b"text,tags\n" + b"".join(b'"a csv prompt %d, with a comma",t1;t2\n' % i for i in range(40))
    job = queued_job(upload(researcher_client, csv_content, name="p.csv", dry_run="1"))
    prompt_import_run(import_id=job.pk)
    job.refresh_from_db()
    assert job.status == PromptImport.Status.DONE and job.report["dry_run"] and job.report["would_create"] == 40
    assert not Prompt.objects.exists()
    job = queued_job(upload(researcher_client, csv_content, name="p.csv", tags="extra"))
    prompt_import_run(import_id=job.pk)
    job.refresh_from_db()
    assert job.report["created"] == 40 and Prompt.objects.filter(tags=["extra", "t1", "t2"]).count() == 40


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_repeated_upload_is_recognised_and_not_queued_again(researcher_client, small_threshold):
    content = txt(50)
    job = queued_job(upload(researcher_client, content))
    prompt_import_run(import_id=job.pk)
    res = upload(researcher_client, content)
    assert queued_job(res).pk == job.pk
    page = researcher_client.get(res["Location"]).content.decode()
    assert "already uploaded with the same options" in page
    assert PromptImport.objects.count() == 1 and Prompt.objects.count() == 50
    other = queued_job(upload(researcher_client, content, tags="again"))  # other options: a new job
    assert other.pk != job.pk


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_file_over_the_limit_is_refused_and_leaves_nothing(researcher_client, small_threshold):
    small_threshold.PROMPT_IMPORT_MAX_BYTES = 2000
    res = upload(researcher_client, txt(100))
    assert res.status_code == 200 and "VIDEODPO_IMPORT_MAX_BYTES" in res.content.decode()
    assert not PromptImport.objects.exists() and not Prompt.objects.exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_bulk_api_answers_202_with_a_status_url(small_threshold):
    client = APIClient()
    client.force_authenticate(UserFactory(roles=["researcher"]))
    res = client.post("/api/prompts/import/", [f"an api prompt {i} about an owl" for i in range(100)], format="json")
    assert res.status_code == 202, res.content
    body = res.json()
    assert body["status"] == "queued" and body["status_url"].endswith(f"/api/prompts/import/{body['id']}/")
    prompt_import_run(import_id=body["id"])
    status = client.get(body["status_url"]).json()
    assert status["status"] == "done" and status["report"]["created"] == 100 and Prompt.objects.count() == 100
    small = client.post("/api/prompts/import/", ["one small prompt"], format="json")
    assert small.status_code == 201  # under the threshold: synchronous as before


# -- a real worker, through the page --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_worker_imports_a_big_file_with_progress_on_the_page(researcher_client, settings, start_worker):
    settings.PROMPT_IMPORT_ASYNC_BYTES = 100_000
    n = 60_000
    content = txt(n)
    assert len(content) > 2_000_000
    start_worker(queues="default")
    job = queued_job(upload(researcher_client, content))
    seen_running = False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        part = researcher_client.get(f"/research/prompts/import/{job.pk}/", HTTP_HX_REQUEST="true").content.decode()
        assert "<html" not in part
        job.refresh_from_db()
        if job.status == PromptImport.Status.RUNNING and job.lines_done > 0:
            seen_running = True
            assert 'hx-trigger="every 1s"' in part and 'id="import-progress"' in part
            # all or nothing: none visible until the commit (the status turns done just after it, so all n may be)
            assert Prompt.objects.count() in (0, n)
        if job.status not in (PromptImport.Status.QUEUED, PromptImport.Status.RUNNING):
            break
        time.sleep(0.2)
    assert job.status == PromptImport.Status.DONE, (job.status, job.error, job.report)
    assert seen_running, "the page never showed the running import's progress"
    assert job.report["created"] == n and Prompt.objects.count() == n
    page = researcher_client.get(f"/research/prompts/import/{job.pk}/").content.decode()
    assert f"Imported {n} prompts (0 already in the pool)" in page and "hx-trigger" not in page
