"""Object storage (https://django-storages.readthedocs.io/en/latest/backends/amazon-S3.html).

``STORAGE_BACKEND=s3`` (default when ``AWS_STORAGE_BUCKET_NAME`` is set) or ``local`` (files under
``VIDEODPO_DATA_DIR/media``, served by a signed, range-capable view). Everything goes through ``annotation.storage``.
"""

from __future__ import annotations

from webapp.env import DATA_DIR, env, storage_backend

STORAGE_BACKEND = storage_backend()
MEDIA_ROOT = env("DJANGO_MEDIA_ROOT", default=str(DATA_DIR / "media"))
MEDIA_URL = "/media/"

if STORAGE_BACKEND == "s3":
    AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME")
    AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default=None)
    AWS_ACCESS_KEY_ID = env("AWS_ACCESS_KEY_ID", default=None)
    AWS_SECRET_ACCESS_KEY = env("AWS_SECRET_ACCESS_KEY", default=None)
    AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", default="us-east-1")
    AWS_QUERYSTRING_AUTH = True  # time-limited presigned URLs
    AWS_QUERYSTRING_EXPIRE = env.int("VIDEODPO_MEDIA_URL_TTL_S", default=3600)
    AWS_S3_SIGNATURE_VERSION = "s3v4"
    AWS_S3_FILE_OVERWRITE = True  # deterministic keys: a re-run overwrites
    AWS_DEFAULT_ACL = None
    _default_storage = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {}}
else:
    _default_storage = {
        "BACKEND": "annotation.storage.OverwritingFileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT, "base_url": MEDIA_URL},
    }

STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
