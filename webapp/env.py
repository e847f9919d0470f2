"""The one place that reads the environment (django-environ).

Django-specific variables are prefixed ``DJANGO_``; the others (``DATABASE_URL``, ``CELERY_BROKER_URL``, ``AWS_*``)
keep the names their libraries use. A malformed value fails at start with a message naming the variable.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

# Where the embedded services keep their state (database files, broker folders, local media).
DATA_DIR = Path(os.environ.get("VIDEODPO_DATA_DIR", BASE_DIR / ".data")).resolve()

DATABASE_SCHEMES = ("postgres", "postgresql", "pgsql")
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem", "memory")
STORAGE_BACKENDS = ("s3", "local")


def database_url_parse(value: str) -> dict:
    """``DATABASE_URL`` -> Django ``DATABASES["default"]``; PostgreSQL only, with a clear error otherwise."""
    parts = urlsplit(value)
    if parts.scheme not in DATABASE_SCHEMES:
        raise ImproperlyConfigured(
            f"DATABASE_URL={value!r} is not a PostgreSQL URL: expected postgresql://USER:PASSWORD@HOST:PORT/NAME "
            f"(scheme one of {', '.join(DATABASE_SCHEMES)}), or leave DATABASE_URL unset for the embedded PostgreSQL."
        )
    try:
        config = environ.Env.db_url_config(value)
    except Exception as exc:  # django-environ raises several types for garbage
        raise ImproperlyConfigured(
            f"DATABASE_URL={value!r} could not be parsed ({exc}): expected postgresql://USER:PASSWORD@HOST:PORT/NAME."
        ) from exc
    if not config.get("NAME"):
        raise ImproperlyConfigured(
            f"DATABASE_URL={value!r} names no database: expected postgresql://USER:PASSWORD@HOST:PORT/NAME."
        )
    config["ENGINE"] = "webapp.postgresql"
    return config


def broker_url_check(value: str) -> str:
    scheme = urlsplit(value).scheme.split("+")[0]
    if scheme not in BROKER_SCHEMES:
        raise ImproperlyConfigured(
            f"CELERY_BROKER_URL={value!r} has an unknown scheme {scheme!r}: expected one of "
            f"{', '.join(BROKER_SCHEMES)} (e.g. redis://127.0.0.1:6379/0 or amqp://guest:guest@127.0.0.1:5672//), "
            "or leave it unset for the embedded filesystem broker."
        )
    return value


def storage_backend() -> str:
    """``STORAGE_BACKEND`` = ``s3`` | ``local``; default ``s3`` when ``AWS_STORAGE_BUCKET_NAME`` is set, else local."""
    default = "s3" if os.environ.get("AWS_STORAGE_BUCKET_NAME") else "local"
    value = os.environ.get("STORAGE_BACKEND", default).strip().lower()
    if value not in STORAGE_BACKENDS:
        raise ImproperlyConfigured(
            f"STORAGE_BACKEND={value!r} is unknown: expected one of {', '.join(STORAGE_BACKENDS)} "
            "('s3' needs AWS_STORAGE_BUCKET_NAME; 'local' stores under VIDEODPO_DATA_DIR/media)."
        )
    if value == "s3" and not os.environ.get("AWS_STORAGE_BUCKET_NAME"):
        raise ImproperlyConfigured("STORAGE_BACKEND='s3' needs AWS_STORAGE_BUCKET_NAME (the bucket to store videos in).")
    return value


def installation_secret(data_dir: Path, name: str = "secret_key") -> str:
    """A random secret made on first start and kept in ``data_dir/name`` (mode 0600); the same on every later start.
    Created with O_EXCL so that processes starting together agree on one value."""
    path = Path(data_dir) / name
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: wait for its write
        for _ in range(100):
            value = path.read_text().strip()
            if value:
                return value
            time.sleep(0.01)
        raise ImproperlyConfigured(f"{path} is empty: delete it, or set DJANGO_SECRET_KEY.") from None
    with os.fdopen(fd, "w") as f:
        value = secrets.token_urlsafe(64)
        f.write(value + "\n")
    return value


def database_url_from_settings(db: dict) -> str:
    """A ``DATABASE_URL`` for the database Django uses now (e.g. the test database), for child processes."""
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or ""
    socket_dir = (db.get("OPTIONS") or {}).get("host")
    if socket_dir or host.startswith("/"):
        return f"postgresql://{auth}/{db['NAME']}?host={quote(socket_dir or host, safe='')}"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgresql://{auth}{host}{port}/{db['NAME']}"
