"""Storage round trip on the S3-compatible server and on local storage: save, read, list, presigned URL over HTTP,
range requests."""

from __future__ import annotations

import os

import pytest
import requests

from annotation import storage

PAYLOAD = bytes(range(256)) * 64  # 16 KiB


def test_s3_round_trip_presigned_url_and_range(s3_storage):
    key = storage.candidate_key(round_id=1, group_id=2, candidate_id=3, filename="video.mp4")
    uri = storage.object_save(key=key, data=PAYLOAD, content_type="video/mp4")
    assert uri == f"s3://{s3_storage}/rounds/1/groups/2/candidates/3/video.mp4"
    assert storage.object_read(key=key) == PAYLOAD
    assert list(storage.object_list(prefix="rounds/1/")) == [key]
    # overwrite, not duplicate
    storage.object_save(key=key, data=PAYLOAD[:100], content_type="video/mp4")
    assert list(storage.object_list(prefix="rounds/1/")) == [key]
    storage.object_save(key=key, data=PAYLOAD, content_type="video/mp4")

    url = storage.object_url(key=key, ttl_s=120)
    assert "X-Amz-Expires=120" in url and "X-Amz-Signature" in url
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200 and whole.content == PAYLOAD
    assert whole.headers["Content-Type"] == "video/mp4"
    part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=10)
    assert part.status_code == 206 and part.content == PAYLOAD[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(PAYLOAD)}"


@pytest.mark.django_db
def test_local_round_trip_signed_url_and_range(client, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "annotation.storage.OverwritingFileSystemStorage",
        "OPTIONS": {"location": str(tmp_path), "base_url": "/media/"},
    }}
    settings.MEDIA_ROOT = str(tmp_path)
    key = storage.export_key(export_id=7, filename="pairs.parquet")
    uri = storage.object_save(key=key, data=PAYLOAD)
    assert uri == (tmp_path / key).as_uri()
    assert storage.key_from_uri(uri) == key
    storage.object_save(key=key, data=PAYLOAD)  # deterministic key: overwritten
    assert list(storage.object_list(prefix="exports/")) == [key]
    assert os.listdir(tmp_path / "exports" / "7") == ["pairs.parquet"]

    from tests.annotation.factories import UserFactory

    user = UserFactory(roles=["researcher"])
    client.force_login(user)
    url = storage.object_url(key=key, user=user)
    whole = client.get(url)
    assert whole.status_code == 200 and b"".join(whole.streaming_content) == PAYLOAD
    assert whole["Accept-Ranges"] == "bytes"
    part = client.get(url, HTTP_RANGE="bytes=10-19")
    assert part.status_code == 206 and b"".join(part.streaming_content) == PAYLOAD[10:20]
    suffix = client.get(url, HTTP_RANGE="bytes=-5")
    assert b"".join(suffix.streaming_content) == PAYLOAD[-5:]
    assert client.get(url, HTTP_RANGE=f"bytes={len(PAYLOAD)}-").status_code == 416
    assert client.get(url[:-3] + "xyz").status_code == 404


@pytest.mark.django_db
def test_local_signed_url_expires(client, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "annotation.storage.OverwritingFileSystemStorage",
        "OPTIONS": {"location": str(tmp_path), "base_url": "/media/"},
    }}
    storage.object_save(key="a/b.bin", data=b"x")
    expired = storage.object_url(key="a/b.bin", ttl_s=-1)
    response = client.get(expired)
    assert response.status_code == 404 and b"expired" in response.content


def test_an_s3_model_root_is_downloaded_only_inside_the_cache(s3_server, s3_bucket, tmp_path):
    """A root URI or an object key with '..' segments would land outside the model cache: refused before anything
    is written (a VLM folder or checkpoint URI is typed by a researcher; the keys come from whoever can write the
    bucket)."""
    import boto3

    from model.layout import resolve_root, split_s3

    client = boto3.client("s3", endpoint_url=s3_server["endpoint_url"], aws_access_key_id=s3_server["access_key"],
                          aws_secret_access_key=s3_server["secret_key"], region_name=s3_server["region_name"])
    for uri in ("s3://b/../../../../outside/x", "s3://../x", "s3:///", "s3://b/m\nINJECT", "s3://b b/m", "s3://b/a//c"):
        with pytest.raises(ValueError, match="malformed S3 URI"):
            split_s3(uri)
    cache = tmp_path / "a" / "b" / "cache"
    client.put_object(Bucket=s3_bucket, Key="good/config.json", Body=b"{}")
    assert (resolve_root(f"s3://{s3_bucket}/good", cache_dir=cache, client=client) / "config.json").read_bytes() == b"{}"
    client.put_object(Bucket=s3_bucket, Key="m/config.json", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key="m/../../../../escaped-by-key.txt", Body=b"x")
    with pytest.raises(ValueError, match="refusing to download it"):
        resolve_root(f"s3://{s3_bucket}/m", cache_dir=cache, client=client)
    with pytest.raises(ValueError, match="malformed S3 URI"):
        resolve_root(f"s3://{s3_bucket}/../../../escaped-by-prefix", cache_dir=cache, client=client)
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["cache"]  # nothing written beside it
