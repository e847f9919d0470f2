"""The one storage module: every save, open and time-limited URL of an object goes through here.

Backends (chosen by ``STORAGE_BACKEND``, see webapp/settings/components/storage.py): S3 or any S3-compatible store via
django-storages/boto3 (presigned URLs), or a local directory (URLs signed by this app, ``annotation.media``, and
served by ``annotation.views.media``, with HTTP range support). Keys are deterministic (docs/architecture.md,
"Object keys"), so a re-run overwrites instead of duplicating.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage

from annotation.conf import videodpo
from annotation.media import key_media_path


class OverwritingFileSystemStorage(FileSystemStorage):
    """Local storage with S3 semantics for deterministic keys: saving an existing key replaces it."""

    def get_available_name(self, name, max_length=None):
        if self.exists(name):
            self.delete(name)
        return name


# -- keys -------------------------------------------------------------------------------------------------------------
def candidate_key(*, round_id: int, group_id: int, candidate_id: int, filename: str) -> str:
    return f"rounds/{round_id}/groups/{group_id}/candidates/{candidate_id}/{filename}"


def round_prefix(*, round_id: int) -> str:
    return f"rounds/{round_id}/"


def text_embedding_key(*, prompt_id: int, encoder_version: str) -> str:
    return f"prompts/{prompt_id}/text-embeddings/{encoder_version}.safetensors"


def empty_prompt_embedding_key(*, checkpoint_id: int) -> str:
    """The empty prompt's text-encoder outputs for a checkpoint (the DPO trainer's prompt dropout)."""
    return f"checkpoints/{checkpoint_id}/text-embeddings/empty.safetensors"


def checkpoint_prefix(*, checkpoint_id: int | str) -> str:
    return f"checkpoints/{checkpoint_id}/"


def export_key(*, export_id: int, filename: str) -> str:
    return f"exports/{export_id}/{filename}"


# -- URIs -------------------------------------------------------------------------------------------------------------
def is_s3() -> bool:
    return settings.STORAGE_BACKEND == "s3"


def uri_for(key: str) -> str:
    """The stable URI of a key: ``s3://bucket/key`` or ``file:///abs/path`` (what the DPO trainer reads)."""
    if is_s3():
        return f"s3://{default_storage.bucket_name}/{key}"
    return Path(default_storage.path(key)).as_uri()


def s3_client():
    """The boto3 client of the S3 storage backend (its endpoint and credentials); None with local storage."""
    return default_storage.connection.meta.client if is_s3() else None


def is_storage_uri(uri: str) -> bool:
    """Whether ``uri`` names an object of this app's storage, as ``uri_for`` writes them: ``s3://<its bucket>/<key>``
    or a ``file://`` path inside ``MEDIA_ROOT``, with no ``..`` step (a run's settings may name such objects, never a
    file elsewhere on a worker)."""
    if not isinstance(uri, str) or "\x00" in uri:
        return False
    if uri.startswith("s3://"):
        parts = uri[len("s3://"):].split("/", 1)
        return (is_s3() and len(parts) == 2 and parts[0] == default_storage.bucket_name and bool(parts[1])
                and ".." not in parts[1].split("/"))
    if uri.startswith("file://") and not is_s3():
        path = Path(uri[len("file://"):])
        root = Path(settings.MEDIA_ROOT).resolve()
        return path.is_absolute() and ".." not in path.parts and path.resolve().is_relative_to(root)
    return False


def key_from_uri(uri: str) -> str:
    if uri.startswith("s3://"):
        return uri.split("/", 3)[3]
    if uri.startswith("file://"):
        path = Path(uri[len("file://") :])
        return str(path.relative_to(Path(settings.MEDIA_ROOT).resolve()))
    return uri


# -- I/O --------------------------------------------------------------------------------------------------------------
def object_save(*, key: str, data: bytes | IO[bytes], content_type: str = "application/octet-stream") -> str:
    """Write ``data`` at ``key`` (overwriting), return the object's URI."""
    content = ContentFile(data) if isinstance(data, bytes) else File(data)
    if is_s3():
        content.content_type = content_type  # django-storages passes it as ContentType
    default_storage.save(key, content)
    return uri_for(key)


def object_save_file(*, key: str, path: Path, content_type: str = "application/octet-stream") -> str:
    with open(path, "rb") as fh:
        return object_save(key=key, data=fh, content_type=content_type)


def object_open(*, key: str, mode: str = "rb") -> IO[bytes]:
    return default_storage.open(key, mode)


def object_stream(*, key: str) -> IO[bytes]:
    """The object's bytes as a stream read as it is consumed (S3: the GetObject body; django-storages' ``open`` would
    first download the whole object into memory). Close it after use."""
    if is_s3():
        return s3_client().get_object(Bucket=default_storage.bucket_name, Key=key)["Body"]
    return default_storage.open(key, "rb")


def object_read(*, key: str) -> bytes:
    with object_open(key=key) as fh:
        return fh.read()


def object_download(*, key: str, path: Path) -> Path:
    with object_open(key=key) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    return path


def object_exists(*, key: str) -> bool:
    return default_storage.exists(key)


def object_delete(*, key: str) -> None:
    if default_storage.exists(key):
        default_storage.delete(key)


def object_list(*, prefix: str) -> Iterator[str]:
    """Every key under ``prefix`` (recursive)."""
    if is_s3():
        bucket = default_storage.bucket
        for obj in bucket.objects.filter(Prefix=prefix):
            yield obj.key
        return
    root = Path(settings.MEDIA_ROOT) / prefix
    if root.exists():
        for path in sorted(root.rglob("*")):
            if path.is_file():
                yield str(path.relative_to(settings.MEDIA_ROOT))


def object_url(*, key: str, user=None, ttl_s: int | None = None) -> str:
    """A time-limited URL that a browser can GET (with Range requests). On local storage the app's link is bound to
    ``user`` (the signed-in reviewer or researcher a page is made for; nobody else, nor anyone without the role, can
    use it) and lives at most ``media.KEY_LINK_TTL_S``; with no user, and on S3, a bearer URL valid ``ttl_s`` (only
    export media links, for machines without a session, are made so)."""
    ttl_s = ttl_s or videodpo().media_url_ttl_s
    if is_s3():
        return default_storage.url(key, expire=ttl_s)
    return key_media_path(key=key, ttl_s=ttl_s, user_id=getattr(user, "pk", None))
