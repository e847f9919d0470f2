"""Findings 5 and 10 in the exports: spreadsheet formula injection, and prompt edits that rewrote history."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rest_framework.test import APIClient

from annotation import storage
from annotation.exports.formats import csv_cell
from annotation.models import Export
from annotation.services.exports import export_artifact_key, export_create, export_run
from annotation.services.pairs import group_pairs_aggregate
from annotation.services.prompt_edits import prompt_update
from tests.exports.factories import build_loop, checkpoint, group, judge, prompt, round_

pytestmark = pytest.mark.django_db
PREFIXES = ["=", "+", "-", "@", "\t", "\r"]


def run(format: str) -> bytes:
    export = export_create(format=format, filter={}, actor=None, enqueue=False)
    export = export_run(export_id=export.pk)
    assert export.status == Export.Status.DONE, export.error
    return storage.object_read(key=export_artifact_key(export=export))


@pytest.mark.parametrize("prefix", PREFIXES)
def test_csv_cell_neutralises_each_formula_prefix(prefix):
    assert csv_cell(prefix + "HYPERLINK(\"http://evil\",\"x\")") == "'" + prefix + "HYPERLINK(\"http://evil\",\"x\")"


def test_csv_cell_leaves_plain_text_and_numbers():
    assert csv_cell("a cat surfing") == "a cat surfing" and csv_cell(-1.5) == -1.5 and csv_cell(25) == 25


def test_videoalign_csv_neutralises_every_prefix_end_to_end():
    loop = build_loop(n_prompts=1)
    base = checkpoint("csv-base")
    rnd = round_(base, name="csv-round")
    texts = {}
    for i, prefix in enumerate(PREFIXES):
        text = f"{prefix}HYPERLINK(\"http://evil.example/{i}\",\"click\") take {i}"
        g = group(rnd, prompt(text), checkpoints=[base], seeds=[1, 2])
        a, b = g.candidates.order_by("seed").values_list("id", flat=True)
        for ann in loop.annotators:
            judge(g, ann, preferred=[a], non_preferred=[b])
        group_pairs_aggregate(group=g)
        texts[i] = text
    rows = list(csv.DictReader(io.StringIO(run("videoalign").decode("utf-8"), newline="")))
    prompts = [r["prompt"] for r in rows]
    for text in texts.values():
        assert "'" + text in prompts
    for value in (v for r in rows for v in r.values()):
        assert not value.startswith(tuple(PREFIXES)), value


def test_prompt_edit_keeps_the_text_shown_in_exports_and_pairs_api():
    loop = build_loop(n_prompts=1)
    g = loop.groups[0]
    old = g.prompt.text
    prompt_update(prompt=g.prompt, text="an entirely different prompt, written later")
    raw = [json.loads(line) for line in run("raw").decode().splitlines()]
    assert {r["prompt"] for r in raw if r["group_id"] == g.pk} == {old}
    trl = [json.loads(line) for line in run("trl").decode().splitlines()]
    assert old in {r["prompt"] for r in trl}
    assert "an entirely different prompt, written later" not in {r["prompt"] for r in trl}
    client = APIClient()
    client.force_authenticate(loop.researcher)
    pairs = client.get("/api/pairs/", {"round": g.round_id}).json()["results"]
    assert pairs and {p["prompt"] for p in pairs if p["group"] == g.pk} == {old}
    g.refresh_from_db()
    assert g.prompt_text == old and g.prompt.text == "an entirely different prompt, written later"


def test_export_downloads_need_a_researcher_or_a_short_lived_link():
    import time

    from django.test import Client

    from annotation.media import media_target
    from annotation.selectors.exports import EXPORT_LINK_TTL_S

    loop = build_loop(n_prompts=1)
    export = export_run(export_id=export_create(format="trl", filter={}, actor=None, enqueue=False).pk)
    assert Client().get(f"/research/exports/{export.pk}/download/").status_code == 302  # to the login page
    annotator_client = Client()
    annotator_client.force_login(loop.annotators[0])
    assert annotator_client.get(f"/research/exports/{export.pk}/download/").status_code == 403
    researcher = Client()
    researcher.force_login(loop.researcher)
    res = researcher.get(f"/research/exports/{export.pk}/download/")
    assert res.status_code == 302 and res["Location"].startswith("/m/")
    media_target(res["Location"].rsplit("/", 1)[1])  # a valid link now
    api = APIClient()
    api.force_authenticate(loop.researcher)
    assert api.get(f"/research/api/exports/{export.pk}/").json()["download_ttl_s"] == EXPORT_LINK_TTL_S <= 300
    from annotation.media import _token_payload

    assert _token_payload(res["Location"].rsplit("/", 1)[1])[-1] <= time.time() + EXPORT_LINK_TTL_S + 1
