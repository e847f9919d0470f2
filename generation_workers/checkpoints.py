"""Model roots: a local folder (path or ``file://``) is used in place; an ``s3://bucket/prefix`` root is downloaded once
to ``VIDEODPO["MODEL_CACHE_DIR"]/s3/<bucket>/<prefix>`` (a manifest of keys, sizes and ETags marks a complete copy;
a file lock keeps two worker processes of one machine from downloading it at the same time)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

MANIFEST = ".videodpo-download.json"


class CheckpointMissingError(FileNotFoundError):
    """The model root is absent or incomplete (deterministic: no retry)."""


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def s3_client():
    """A boto3 S3 client on the app's endpoint and credentials (the storage settings)."""
    import boto3

    options = settings.STORAGES["default"].get("OPTIONS", {}) if settings.STORAGE_BACKEND == "s3" else {}
    return boto3.client(
        "s3",
        endpoint_url=options.get("endpoint_url") or getattr(settings, "AWS_S3_ENDPOINT_URL", None),
        aws_access_key_id=options.get("access_key") or getattr(settings, "AWS_ACCESS_KEY_ID", None),
        aws_secret_access_key=options.get("secret_key") or getattr(settings, "AWS_SECRET_ACCESS_KEY", None),
        region_name=options.get("region_name") or getattr(settings, "AWS_S3_REGION_NAME", None) or "us-east-1",
    )


def _s3_objects(uri: str) -> list[dict]:
    bucket, prefix = _split_s3(uri)
    client = s3_client()
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) + 1 :] if prefix else obj["Key"]
            if rel and not rel.endswith("/"):
                objects.append({"key": obj["Key"], "rel": rel, "size": obj["Size"], "etag": obj.get("ETag", "")})
    return objects


def s3_list_root(uri: str) -> list[str]:
    """Relative paths of every object under an ``s3://`` model root."""
    return [o["rel"] for o in _s3_objects(uri)]


def cache_dir() -> Path:
    default = Path(getattr(settings, "MEDIA_ROOT", "/tmp")).parent / "model-cache"
    return Path((getattr(settings, "VIDEODPO", {}) or {}).get("MODEL_CACHE_DIR") or default)


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def resolve_model_root(uri: str) -> Path:
    """The local folder of a model root, downloading an ``s3://`` root into the cache if needed."""
    uri = uri.strip()
    if not uri.startswith("s3://"):
        root = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        if not (root / "transformer").is_dir() and not (root / "config.json").is_file():
            raise CheckpointMissingError(f"model root {uri} does not exist or has no transformer/ folder")
        return root
    bucket, prefix = _split_s3(uri)
    local = cache_dir() / "s3" / bucket / prefix
    objects = _s3_objects(uri)
    if not objects:
        raise CheckpointMissingError(f"no objects under {uri}")
    manifest = sorted((o["rel"], o["size"], o["etag"]) for o in objects)
    digest = hashlib.sha256(json.dumps(manifest).encode()).hexdigest()
    marker = local / MANIFEST
    with _file_lock(local.with_name(local.name + ".lock")):
        if marker.is_file() and json.loads(marker.read_text()).get("digest") == digest:
            return local
        logger.info("downloading model root %s (%d files, %.1f MB) to %s", uri, len(objects),
                    sum(o["size"] for o in objects) / 1e6, local)
        client = s3_client()
        for obj in objects:
            dest = local / obj["rel"]
            if dest.is_file() and dest.stat().st_size == obj["size"] and not marker.is_file():
                pass  # a partial earlier download: same size, assume complete file (ETags are not always MD5s)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            client.download_file(bucket, obj["key"], str(tmp))
            os.replace(tmp, dest)
        marker.write_text(json.dumps({"uri": uri, "digest": digest, "files": len(objects)}))
    return local


def fingerprint(root: Path, folders: tuple[str, ...], *, sample_bytes: int = 1 << 20) -> str:
    """A short, stable hash of some component folders of a model root: every file's relative path and size, and the
    first and last ``sample_bytes`` of each (enough to tell random or trained weights apart without reading GBs)."""
    h = hashlib.sha256()
    for folder in folders:
        base = root / folder
        if not base.exists():
            h.update(f"{folder}:absent".encode())
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            size = path.stat().st_size
            h.update(f"{path.relative_to(root)}:{size}".encode())
            with open(path, "rb") as fh:
                h.update(fh.read(sample_bytes))
                if size > 2 * sample_bytes:
                    fh.seek(-sample_bytes, os.SEEK_END)
                    h.update(fh.read(sample_bytes))
    return h.hexdigest()[:16]
