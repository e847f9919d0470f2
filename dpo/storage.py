"""Read stored objects by URI: plain local path, ``file:///abs/path`` or ``s3://bucket/key``.

S3 goes through boto3 with the endpoint from env ``AWS_S3_ENDPOINT_URL`` (MinIO, R2, ...) and the usual AWS
credential env vars. No Django here: the trainer runs on machines without the app.
"""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path
from typing import Any

import torch

from model.layout import parse_uri, s3_client_from_env  # noqa: F401 - parse_uri is re-exported (dpo.data)

_local = threading.local()


def s3_client():
    """One boto3 client per thread (boto3 clients are not thread-safe to create concurrently)."""
    client = getattr(_local, "s3", None)
    if client is None:
        client = _local.s3 = s3_client_from_env()
    return client


def uri_exists(uri: str) -> bool:
    kind, bucket, key = parse_uri(uri)
    if kind == "local":
        return Path(key).is_file()
    from botocore.exceptions import ClientError

    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def read_bytes(uri: str, start: int | None = None, end: int | None = None) -> bytes:
    """Whole object, or bytes [start, end) of it."""
    kind, bucket, key = parse_uri(uri)
    if kind == "local":
        with open(key, "rb") as fh:
            if start is None:
                return fh.read()
            fh.seek(start)
            return fh.read((end or 0) - start) if end is not None else fh.read()
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if start is not None:
        kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
    return s3_client().get_object(**kwargs)["Body"].read()


def read_safetensors_header(uri: str) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names -> dtype/shape, plus ``__metadata__``), read cheaply."""
    (n,) = struct.unpack("<Q", read_bytes(uri, 0, 8))
    if n <= 0 or n > 100_000_000:
        raise ValueError(f"not a safetensors file (header length {n}): {uri}")
    return json.loads(read_bytes(uri, 8, 8 + n))


def load_safetensors(uri: str) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors object on CPU."""
    from safetensors.torch import load, load_file

    kind, _, key = parse_uri(uri)
    if kind == "local":
        return load_file(key, device="cpu")
    return load(read_bytes(uri))
