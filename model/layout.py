"""The official ``stepfun-ai/stepvideo-t2v`` model-root layout, and the one place that validates, lists, resolves and
fingerprints model roots (torch-free and Django-free, so the web app, the workers and the trainer all read it).

A model root is a local folder (a path or ``file:///abs/path``) or an ``s3://bucket/prefix``::

    model_index.json
    transformer/config.json, diffusion_pytorch_model[-0000i-of-0000n].safetensors (+ .index.json)
    vae/vae_v2.safetensors
    step_llm/config.json, model-0000i-of-0000n.safetensors, model.safetensors.index.json, step1_chat_tokenizer.model
    hunyuan_clip/clip_text_encoder/{config.json, pytorch_model.bin}, hunyuan_clip/tokenizer/{vocab.txt, ...}

S3 calls take a boto3 client; without one, a client is built from the standard AWS environment variables and
``AWS_S3_ENDPOINT_URL`` (the web app passes the client of its own storage settings).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

logger = logging.getLogger(__name__)

# -- layout constants -------------------------------------------------------------------------------------------------
DIT_DIR, DIT_WEIGHTS, DIT_INDEX = "transformer", "diffusion_pytorch_model", "diffusion_pytorch_model.safetensors.index.json"
LLM_DIR, LLM_WEIGHTS, LLM_INDEX = "step_llm", "model", "model.safetensors.index.json"
LLM_TOKENIZER = "step1_chat_tokenizer.model"
VAE_FILE = "vae/vae_v2.safetensors"
CLIP_MODEL_DIR, CLIP_TOKENIZER_DIR = "hunyuan_clip/clip_text_encoder", "hunyuan_clip/tokenizer"
TEXT_ENCODER_FOLDERS = (LLM_DIR, "hunyuan_clip")
VAE_FOLDERS = ("vae",)

# Entries every model root needs (relative path -> what it is, for messages).
REQUIRED_ENTRIES = {
    f"{DIT_DIR}/config.json": f"the DiT config ({DIT_DIR}/config.json)",
    VAE_FILE: f"the VAE weights ({VAE_FILE})",
    f"{LLM_DIR}/config.json": f"the Step-LLM text encoder ({LLM_DIR}/config.json)",
    f"{LLM_DIR}/{LLM_TOKENIZER}": f"the Step-LLM tokenizer ({LLM_DIR}/{LLM_TOKENIZER})",
    CLIP_MODEL_DIR: f"the CLIP text encoder ({CLIP_MODEL_DIR}/)",
    CLIP_TOKENIZER_DIR: f"the CLIP tokenizer ({CLIP_TOKENIZER_DIR}/)",
}
# One of these holds the DiT weights (sharded with an index, or a single file).
DIT_WEIGHT_FILES = (f"{DIT_DIR}/{DIT_INDEX}", f"{DIT_DIR}/{DIT_WEIGHTS}.safetensors")
DIT_WEIGHTS_MISSING = f"the DiT weights ({DIT_DIR}/{DIT_WEIGHTS}*.safetensors)"

DOWNLOAD_MARKER = ".videodpo-download.json"  # written last into a complete local copy of an s3:// root


class ModelRootMissingError(FileNotFoundError):
    """The model root is absent or incomplete (deterministic: a retry fails the same way)."""


# -- URIs (the one parser of object and model-root URIs: the app, the workers and the trainer read it) ----------------
def parse_uri(uri: str) -> tuple[str, str, str]:
    """A stored object's URI -> ``("local", "", path)`` (a path or ``file:///abs/path``) or ``("s3", bucket, key)``."""
    uri = str(uri).strip()
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc or not parsed.path.lstrip("/"):
            raise ValueError(f"malformed S3 URI (want s3://bucket/key): {uri}")
        return "s3", parsed.netloc, parsed.path.lstrip("/")
    if uri.startswith("file://"):
        return "local", "", unquote(urlparse(uri).path)
    if "://" in uri:
        raise ValueError(f"unsupported URI scheme (use a local path, file:// or s3://): {uri}")
    return "local", "", uri


def is_s3(uri: str) -> bool:
    return str(uri).strip().startswith("s3://")


_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]{0,254}")  # bucket names (S3's, and the looser ones of S3-compatible stores)


def split_s3(uri: str) -> tuple[str, str]:
    """A model root ``s3://bucket/some/prefix/`` -> ``("bucket", "some/prefix")`` (the prefix may be empty).

    Raises ValueError for anything else: no bucket, a bucket that is not a bucket name, a ``.`` or ``..`` segment,
    or control characters (the prefix becomes a folder of the model cache: it must stay inside it)."""
    text = str(uri).strip()
    parsed = urlparse(text)  # (which silently drops tabs and newlines: checked on the text itself)
    if any(ord(c) < 32 or c == "\x7f" for c in text) or parsed.scheme != "s3" or not _BUCKET.fullmatch(parsed.netloc or "") or not _safe_relative(parsed.path.strip("/")):
        raise ValueError(f"malformed S3 URI (want s3://bucket/prefix, no '.' or '..' segments): {text[:200]!r}")
    return parsed.netloc, parsed.path.strip("/")


def _safe_relative(rel: str) -> bool:
    """A relative key path that stays where it is put: no ``.``/``..``/empty inner segments, no control characters,
    not absolute."""
    if rel == "":
        return True
    if rel.startswith("/") or any(ord(c) < 32 or c == "\x7f" or c == "\\" for c in rel):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def local_path(uri: str) -> Path:
    """A local path or ``file://`` URI -> its path."""
    kind, _, path = parse_uri(uri)
    if kind != "local":
        raise ValueError(f"not a local path or file:// URI: {uri}")
    return Path(path)


def s3_client_from_env():
    """A boto3 S3 client from the standard AWS variables, with ``AWS_S3_ENDPOINT_URL`` for S3-compatible stores
    (MinIO, R2, moto...): what the trainer uses on machines without the app."""
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_S3_ENDPOINT_URL") or None,
                        region_name=os.environ.get("AWS_S3_REGION_NAME") or None)


def s3_objects(uri: str, *, client=None) -> list[dict[str, Any]]:
    """Every object under an ``s3://`` root: ``{"key", "rel", "size", "etag"}``, in key order."""
    bucket, prefix = split_s3(uri)
    client = client or s3_client_from_env()
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) + 1 :] if prefix else obj["Key"]
            if rel and not rel.endswith("/"):
                if not _safe_relative(rel):  # a key that would be written outside the root's cache folder
                    raise ValueError(f"{uri}: object key {obj['Key'][:200]!r} has a '.', '..' or empty segment or "
                                     "control characters: refusing to download it")
                objects.append({"key": obj["Key"], "rel": rel, "size": obj["Size"], "etag": obj.get("ETag", "")})
    return objects


# -- validating -------------------------------------------------------------------------------------------------------
def root_entries(uri: str, *, client=None) -> set[str] | None:
    """Which of the required entries (and DiT weight files) exist under a model root; None when the root itself does
    not exist. Local roots may hold symlinked components (the DPO trainer's ``final/``); ``s3://`` is one listing."""
    wanted = {*REQUIRED_ENTRIES, *DIT_WEIGHT_FILES}
    if is_s3(uri):
        entries: set[str] = set()
        for obj in s3_objects(uri, client=client):
            parts = obj["rel"].split("/")
            entries.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return (entries & wanted) if entries else None
    root = local_path(uri)
    if not root.is_dir():
        return None
    return {rel for rel in wanted if (root / rel).exists()}


def missing_parts(entries: set[str]) -> list[str]:
    """What a model root with these entries lacks, in words (empty: complete)."""
    missing = [what for rel, what in REQUIRED_ENTRIES.items() if rel not in entries]
    if not any(rel in entries for rel in DIT_WEIGHT_FILES):
        missing.append(DIT_WEIGHTS_MISSING)
    return missing


# -- resolving --------------------------------------------------------------------------------------------------------
@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def resolve_root(uri: str, *, cache_dir: Path, client=None) -> Path:
    """The local folder of a model root. A local root is used in place; an ``s3://bucket/prefix`` root is downloaded
    once to ``cache_dir/s3/<bucket>/<prefix>`` (a marker with a digest of keys, sizes and ETags marks a complete copy;
    a file lock keeps two processes of one machine from downloading it at the same time)."""
    uri = uri.strip()
    if not is_s3(uri):
        root = local_path(uri)
        if not (root / DIT_DIR).is_dir() and not (root / "config.json").is_file():
            raise ModelRootMissingError(f"model root {uri} does not exist or has no {DIT_DIR}/ folder")
        return root
    bucket, prefix = split_s3(uri)
    local = Path(cache_dir) / "s3" / bucket / prefix
    client = client or s3_client_from_env()
    objects = s3_objects(uri, client=client)
    if not objects:
        raise ModelRootMissingError(f"no objects under {uri}")
    digest = hashlib.sha256(json.dumps(sorted((o["rel"], o["size"], o["etag"]) for o in objects)).encode()).hexdigest()
    marker = local / DOWNLOAD_MARKER
    with _file_lock(local.with_name(local.name + ".lock")):
        if marker.is_file() and json.loads(marker.read_text()).get("digest") == digest:
            return local
        logger.info("downloading model root %s (%d files, %.1f MB) to %s", uri, len(objects),
                    sum(o["size"] for o in objects) / 1e6, local)
        inside = local.resolve()
        for obj in objects:
            dest = local / obj["rel"]
            if not dest.resolve().is_relative_to(inside):  # belt and braces: split_s3 / s3_objects already refuse it
                raise ValueError(f"{uri}: object {obj['key'][:200]!r} would be written outside {local}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            client.download_file(bucket, obj["key"], str(tmp))
            os.replace(tmp, dest)
        marker.write_text(json.dumps({"uri": uri, "digest": digest, "files": len(objects)}))
    return local


# -- fingerprinting ---------------------------------------------------------------------------------------------------
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
