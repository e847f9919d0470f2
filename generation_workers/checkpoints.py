"""Model roots on the workers: :func:`model.layout.resolve_root` with the app's cache folder
(``VIDEODPO["MODEL_CACHE_DIR"]``) and the S3 client of the app's storage settings."""

from __future__ import annotations

from pathlib import Path

from annotation import storage
from annotation.conf import videodpo
from model import layout


def resolve_model_root(uri: str) -> Path:
    """The local folder of a model root, downloading an ``s3://`` root into the cache once (see model.layout)."""
    client = storage.s3_client() if layout.is_s3(uri) else None
    return layout.resolve_root(uri, cache_dir=videodpo().model_cache_dir, client=client)
