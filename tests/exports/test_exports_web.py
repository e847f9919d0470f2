"""Pages and APIs: researchers only, create (with the empty-filter message), status polling, time-limited download,
leaderboard; and the real path: a Celery worker runs the job and the file lands in S3."""

from __future__ import annotations

import io
import json
import re
import time

import pyarrow.parquet as pq
import pytest
import requests
from django.urls import reverse

from annotation.models import Export
from annotation.services.exports import export_create, export_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher_client(client, loop):
    client.force_login(loop.researcher)
    return client


@pytest.mark.parametrize("url_name, args", [
    ("research-exports", []), ("research-leaderboard", []), ("research-api-leaderboard", []),
    ("research-api-export-create", []),
])
def test_annotators_and_reviewers_get_403(client, loop, url_name, args):
    from annotation.services.accounts import user_create

    reviewer = user_create(username="rev_only", password="pw-123456", roles=["reviewer"])
    for user in (loop.annotators[0], reviewer):
        client.force_login(user)
        assert client.get(reverse(url_name, args=args)).status_code == 403
    client.force_login(loop.annotators[0])
    assert client.post(reverse("research-export-create"), {"format": "trl"}).status_code == 403
    assert client.post(reverse("research-api-export-create"), {"format": "trl"}, content_type="application/json").status_code == 403


def test_create_form_then_status_then_download(researcher_client, loop, sent_tasks):
    page = researcher_client.get(reverse("research-exports"))
    assert page.status_code == 200 and b'name="min_agreement"' in page.content
    # empty filter: the form comes back (htmx partial) with the message; nothing created
    resp = researcher_client.post(reverse("research-export-create"),
                                  {"format": "trl", "min_agreement": "1", "min_annotators": "9"}, HTTP_HX_REQUEST="true")
    assert resp.status_code == 200 and b"Nothing to export" in resp.content and Export.objects.count() == 0
    resp = researcher_client.post(reverse("research-export-create"),
                                  {"format": "trl_parquet", "rounds": [loop.eval_round.pk]}, HTTP_HX_REQUEST="true")
    export = Export.objects.get()
    assert resp.status_code == 204 and resp["HX-Redirect"] == reverse("research-export-detail", args=[export.pk])
    status = researcher_client.get(reverse("research-export-detail", args=[export.pk]), HTTP_HX_REQUEST="true")
    assert b'hx-trigger="every 1s"' in status.content and b"<html" not in status.content
    assert researcher_client.get(reverse("research-export-download", args=[export.pk])).status_code == 404
    export_run(export_id=export.pk)
    status = researcher_client.get(reverse("research-export-detail", args=[export.pk]), HTTP_HX_REQUEST="true")
    assert b"every 1s" not in status.content and b'id="export-download"' in status.content  # polling stops
    full = researcher_client.get(reverse("research-export-detail", args=[export.pk]))
    assert b"<html" in full.content and loop.researcher.username.encode() in full.content  # topbar only
    redirect = researcher_client.get(reverse("research-export-download", args=[export.pk]))
    assert redirect.status_code == 302 and "/m/" in redirect["Location"]  # the app's signed media link
    data = b"".join(researcher_client.get(redirect["Location"]).streaming_content)
    assert pq.read_table(io.BytesIO(data)).num_rows == 4
    listing = researcher_client.get(reverse("research-exports"))
    assert export.content_hash[:12].encode() in listing.content


def test_api_create_status_and_leaderboard(researcher_client, loop, sent_tasks, django_capture_on_commit_callbacks):
    url = reverse("research-api-export-create")
    bad = researcher_client.post(url, {"format": "raw", "date_to": "2001-01-01"}, content_type="application/json")
    assert bad.status_code == 400 and "Nothing to export" in bad.json()["detail"]
    assert researcher_client.post(url, {"format": "nope"}, content_type="application/json").status_code == 400
    with django_capture_on_commit_callbacks(execute=True):
        resp = researcher_client.post(url, {"format": "manifest", "rounds": [loop.gen_round.pk], "min_annotators": 2},
                                      content_type="application/json")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["status"] == "queued" and body["download_url"] is None
    assert sent_tasks == [("annotation.tasks_exports.export_run", (body["id"],), "default")]
    export_run(export_id=body["id"])
    done = researcher_client.get(body["status_url"]).json()
    assert done["status"] == "done" and done["row_count"] == 10 and done["download_url"]
    assert done["datasheet"]["content_hash"] == done["content_hash"]
    board = researcher_client.get(reverse("research-api-leaderboard"), {"bootstrap": 50}).json()
    assert [c["name"] for c in board["checkpoints"]] == ["dpo-r1", "base-v1"]
    schema = researcher_client.get(reverse("api-schema"))
    assert schema.status_code == 200 and b"research_leaderboard" in schema.content


def test_an_empty_leaderboard_says_why_instead_of_an_empty_chart(client):
    from annotation.services.accounts import user_create

    client.force_login(user_create(username="res-empty", password="pw-research-1", roles=["researcher"]))
    html = client.get(reverse("research-leaderboard")).content.decode()
    assert 'id="leaderboard-empty"' in html and 'id="chart-strengths"' not in html


def test_leaderboard_page(researcher_client, loop):
    page = researcher_client.get(reverse("research-leaderboard"))
    assert page.status_code == 200
    html = page.content.decode()
    spec = json.loads(re.search(r'<script id="chart-strengths" type="application/json">(.*?)</script>', html).group(1))
    assert spec["kind"] == "interval" and spec["labels"] == ["dpo-r1", "base-v1"] and spec["reference"] == 1000.0
    assert all(lo <= v <= hi for v, lo, hi in zip(spec["values"], spec["low"], spec["high"], strict=True))
    assert "dpo-r1" in html and 'id="win-matrix"' in html
    part = researcher_client.get(reverse("research-leaderboard"), {"rounds": loop.gen_round.pk}, HTTP_HX_REQUEST="true")
    assert b"<html" not in part.content and b"No judged comparisons" in part.content


@pytest.mark.django_db(transaction=True)
def test_worker_runs_export_to_s3(s3_storage, start_worker):
    """A real Celery worker (default queue) runs the job; the artifact lands in S3; the URL is presigned."""
    from tests.exports.factories import build_loop

    loop = build_loop(n_prompts=2)
    start_worker(queues="default")
    export = export_create(format="pickapic", filter={"include_evaluation": True}, actor=loop.researcher)
    deadline = time.monotonic() + 120  # generous: the worker's first task imports pyarrow and boto3 on a busy machine
    while time.monotonic() < deadline:
        export.refresh_from_db()
        if export.status in (Export.Status.DONE, Export.Status.FAILED):
            break
        time.sleep(0.3)
    assert export.status == Export.Status.DONE, export.error
    assert export.uri.startswith(f"s3://{s3_storage}/exports/{export.pk}/") and export.row_count == 7
    from annotation.selectors.exports import export_download_url

    url = export_download_url(export=export)
    assert "X-Amz-Expires" in url or "Expires=" in url
    data = requests.get(url, timeout=10).content
    assert pq.read_table(io.BytesIO(data)).num_rows == 7
