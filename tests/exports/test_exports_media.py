"""Exports that leave the server with their videos: ``media=bundle`` (the videos inside the artifact, rows naming
them by relative paths; the Hugging Face folder loads with ``datasets.load_from_disk`` after being moved), and
``media=links`` (signed URLs that work, then expire); bad media options are a 400 with the message."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation import storage
from annotation.models import Candidate, Export, PreferencePair
from annotation.services.exports import ExportError, export_artifact_key, export_create, export_run

pytestmark = pytest.mark.django_db

N_PAIRS = 14


def store_videos(loop) -> dict[str, bytes]:
    """Give every candidate of the loop a real stored video object (distinct bytes), its URI in ``video_uri``."""
    stored = {}
    for c in Candidate.objects.filter(group__round__in=[loop.gen_round, loop.eval_round]).order_by("id"):
        key = storage.candidate_key(round_id=c.group.round_id, group_id=c.group_id, candidate_id=c.pk,
                                    filename="video.mp4")
        data = os.urandom(40_000 + c.pk)  # more than one 1 MiB copy chunk is not needed to cover chunking logic
        Candidate.objects.filter(pk=c.pk).update(video_uri=storage.object_save(key=key, data=data,
                                                                                content_type="video/mp4"))
        stored[key] = data
    return stored


def run(format: str, **media) -> tuple[Export, bytes]:
    export = export_create(format=format, filter={"include_evaluation": True, **media}, actor=None, enqueue=False)
    export = export_run(export_id=export.pk, chunk_size=4)
    assert export.status == Export.Status.DONE, export.error
    return export, storage.object_read(key=export_artifact_key(export=export))


def paired_keys() -> set[str]:
    """The object keys of every video a pair names."""
    uris = set()
    for chosen, rejected in PreferencePair.objects.values_list("chosen__video_uri", "rejected__video_uri"):
        uris |= {chosen, rejected}
    return {storage.key_from_uri(u) for u in uris}


def check_bundle(tmp_path: Path, loop, stored: dict[str, bytes]) -> None:
    import datasets

    export, data = run("hf_datasets", media="bundle")
    first = tmp_path / "unzipped"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(first)
    moved = tmp_path / "elsewhere" / "dataset"  # another directory: nothing points back at the first one
    moved.parent.mkdir()
    shutil.move(first, moved)
    ds = datasets.load_from_disk(str(moved))["train"]
    assert ds.num_rows == N_PAIRS
    for row in ds:
        for col in ("chosen", "rejected"):
            assert row[col].startswith("media/")
            key = row[col][len("media/"):]
            assert (moved / row[col]).read_bytes() == stored[key] == storage.object_read(key=key)
    media = export.datasheet["media"]
    assert media["mode"] == "bundle" and media["files"] == len(paired_keys())
    assert media["bytes"] == sum(len(stored[k]) for k in paired_keys())
    assert "media/" in (moved / "README.md").read_text()
    # load_dataset on the folder reads the same rows (Parquet layout), the paths as well
    ds2 = datasets.load_dataset(str(moved), cache_dir=str(tmp_path / "cache"))["train"]
    assert sorted(ds2["chosen"]) == sorted(ds["chosen"])
    plain, _ = run("hf_datasets")  # the content hash covers the videos
    assert plain.content_hash != export.content_hash


def test_hf_bundle_loads_elsewhere_local(loop, tmp_path):
    check_bundle(tmp_path, loop, store_videos(loop))


@pytest.mark.slow
def test_hf_bundle_loads_elsewhere_s3(s3_storage, loop, tmp_path):
    stored = store_videos(loop)
    assert all(u.startswith("s3://") for u in Candidate.objects.values_list("video_uri", flat=True))
    check_bundle(tmp_path, loop, stored)


def test_videodpo_and_single_file_bundles(loop):
    stored = store_videos(loop)
    export, data = run("videodpo", media="bundle")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        meta = json.loads(zf.read("metadata.json"))
        paths = {item["basic"]["clip_path"] for item in meta}
        assert paths and all(p.startswith("media/") for p in paths)
        for p in paths:
            assert zf.read(p) == stored[p[len("media/"):]]
        assert {n for n in zf.namelist() if n.startswith("media/")} == paths
    # the content hash covers the videos: a stored video changed, the same bundle gets another hash
    again, _ = run("videodpo", media="bundle")
    assert again.content_hash == export.content_hash and again.datasheet["identical_to_version"] == export.version
    key = next(iter(sorted(stored)))
    stored[key] = b"changed" + stored[key]
    storage.object_save(key=key, data=stored[key])
    changed, _ = run("videodpo", media="bundle")
    assert changed.content_hash != export.content_hash
    export, data = run("trl", media="bundle")
    assert export.datasheet["file"] == "trl.jsonl.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        rows = [json.loads(line) for line in zf.read("trl.jsonl").decode().splitlines()]
        assert len(rows) == N_PAIRS
        for r in rows:
            assert zf.read(r["chosen"]) == stored[r["chosen"][len("media/"):]]


def test_cli_bundle_unpacks_folder(loop, tmp_path):
    stored = store_videos(loop)
    out = tmp_path / "vdpo"
    call_command("export_preferences", "--format", "videodpo", "--out", str(out), "--media", "bundle",
                 stdout=io.StringIO())
    meta = json.loads((out / "metadata.json").read_text())
    assert all((out / m["basic"]["clip_path"]).read_bytes() == stored[m["basic"]["clip_path"][6:]] for m in meta)
    with pytest.raises(CommandError):
        call_command("export_preferences", "--format", "trl", "--out", str(tmp_path / "x"), "--media", "zip",
                     stdout=io.StringIO(), stderr=io.StringIO())


def test_links_local_work_then_expire(client, loop):
    stored = store_videos(loop)
    client.force_login(loop.researcher)
    response = client.post(reverse("research-api-export-create"),
                           {"format": "trl", "include_evaluation": True, "rounds": [], "media": "links",
                            "media_ttl_s": 2}, content_type="application/json")
    assert response.status_code == 201, response.content
    export = export_run(export_id=response.json()["id"])
    rows = [json.loads(line) for line in storage.object_read(key=export_artifact_key(export=export)).splitlines()]
    assert export.datasheet["media"]["mode"] == "links" and export.datasheet["media"]["ttl_s"] == 2
    assert export.datasheet["media"]["expires_at"]
    url = rows[0]["chosen"]
    assert url.startswith("http://testserver/")
    client.logout()  # a signed link needs no session: it works on another machine
    got = client.get(url[len("http://testserver"):])
    assert got.status_code == 200
    assert b"".join(got.streaming_content if got.streaming else [got.content]) in stored.values()
    time.sleep(2.5)
    assert client.get(url[len("http://testserver"):]).status_code == 404


@pytest.mark.slow
def test_links_s3_work_then_expire(s3_storage, loop):
    stored = store_videos(loop)
    export, data = run("videoalign", media="links", media_ttl_s=2)
    line = data.decode().splitlines()[1]
    url = line.split(",")[0]
    assert url.startswith("http") and "X-Amz-Expires=2" in url
    got = requests.get(url, timeout=10)
    assert got.status_code == 200 and got.content in stored.values()
    # moto_server does not refuse expired presigned URLs (S3 does): check the signed expiry is the chosen one
    query = parse_qs(urlparse(url).query)
    signed = dt.datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    expires = signed + dt.timedelta(seconds=int(query["X-Amz-Expires"][0]))
    assert abs((expires - dt.datetime.fromisoformat(export.datasheet["media"]["expires_at"])).total_seconds()) < 5


@pytest.mark.parametrize("media, message", [
    ({"media": "zip"}, "media must be one of: none, bundle, links."),
    ({"media": "links", "media_ttl_s": 0}, "media_ttl_s must be a whole number"),
    ({"media": "links", "media_ttl_s": "soon"}, "media_ttl_s must be a whole number"),
    ({"media": "bundle", "media_ttl_s": 60}, "media_ttl_s applies to media=links only."),
])
def test_bad_media_options_are_400(client, loop, media, message):
    client.force_login(loop.researcher)
    response = client.post(reverse("research-api-export-create"), {"format": "trl", **media},
                           content_type="application/json")
    assert response.status_code == 400 and message in response.json()["detail"]
    if "links only" not in message:  # the form sends its lifetime field only with links
        page = client.post(reverse("research-export-create"), {"format": "trl", **media})
        assert page.status_code == 400 and message in page.content.decode()
    assert not Export.objects.exists()


def test_manifest_refuses_media(loop):
    with pytest.raises(ExportError, match="media must be none"):
        export_create(format="manifest", filter={"media": "bundle"}, actor=None, enqueue=False)


def test_form_keeps_media_and_creates_bundle_export(client, loop):
    client.force_login(loop.researcher)
    page = client.get(reverse("research-exports")).content.decode()
    assert 'name="media"' in page and 'value="bundle"' in page and 'name="media_ttl_s"' in page
    bad = client.post(reverse("research-export-create"), {"format": "trl", "media": "links", "media_ttl_s": "0"})
    assert bad.status_code == 400 and '<option value="links" selected' in bad.content.decode()
    response = client.post(reverse("research-export-create"), {"format": "videodpo", "media": "links",
                                                               "media_ttl_s": "120", "include_evaluation": "1"})
    assert response.status_code == 302
    export = Export.objects.get()
    assert export.filter["media"] == "links" and export.filter["media_ttl_s"] == 120
    assert export.filter["media_base_url"] == "http://testserver"
    store_videos(loop)
    export = export_run(export_id=export.pk)
    detail = client.get(reverse("research-export-detail", args=[export.pk])).content.decode()
    assert "signed links, valid until" in detail


def test_a_videoalign_bundle_trains_the_vlm_reward_model_where_it_is_unzipped(loop, tmp_path, capsys):
    """The documented hand-off: the VideoAlign export with ``media=bundle``, unzipped elsewhere, is what
    ``python -m dpo reward train --backbone vlm`` reads (its paths resolve beside the CSV)."""
    import numpy as np

    from dpo.__main__ import main
    from generation_workers.video import encode_mp4
    from model.world.render import render
    from tests.dpo.test_reward_vlm import write_tiny_vlm

    for c in Candidate.objects.filter(group__round__in=[loop.gen_round, loop.eval_round]).order_by("id"):
        clip = tmp_path / "clip.mp4"
        encode_mp4(render("a big red circle bouncing on a black background", seed=c.pk, size=64, frames=9), clip, fps=8)
        key = storage.candidate_key(round_id=c.group.round_id, group_id=c.group_id, candidate_id=c.pk,
                                    filename="video.mp4")
        Candidate.objects.filter(pk=c.pk).update(video_uri=storage.object_save(key=key, data=clip.read_bytes(),
                                                                                content_type="video/mp4"))
    export, data = run("videoalign", media="bundle")
    assert export.datasheet["file"] == "videoalign.csv.zip"
    unpacked = tmp_path / "elsewhere"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(unpacked)
    vlm = tmp_path / "vlm"
    write_tiny_vlm(vlm)
    assert main(["reward", "train", "--backbone", "vlm", "--videoalign", str(unpacked / "videoalign.csv"),
                 "--vlm", str(vlm), "--out", str(tmp_path / "rm"), "--frames", "4", "--steps", "2", "--holdout", "0",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["train_pairs"] == N_PAIRS and np.isfinite(result["metrics"]["loss_last"])
