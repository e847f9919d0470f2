"""Tests: the machine's PostgreSQL/broker when DATABASE_URL/CELERY_BROKER_URL are set, else the embedded ones.

Media and the embedded broker's folders go to a fresh temporary directory per test run (inherited by the worker
processes the tests start, through the environment)."""

import os
import tempfile

if "VIDEODPO_TEST_TMP" not in os.environ:
    os.environ["VIDEODPO_TEST_TMP"] = tempfile.mkdtemp(prefix="videodpo-test-")
os.environ.setdefault("VIDEODPO_BROKER_DIR", os.path.join(os.environ["VIDEODPO_TEST_TMP"], "broker"))
os.environ.setdefault("DJANGO_MEDIA_ROOT", os.path.join(os.environ["VIDEODPO_TEST_TMP"], "media"))
os.environ.setdefault("STORAGE_BACKEND", "local")
os.environ.setdefault("VIDEODPO_MODEL_CACHE_DIR", os.path.join(os.environ["VIDEODPO_TEST_TMP"], "model-cache"))

from webapp.settings.base import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
MIDDLEWARE = [m for m in MIDDLEWARE if "whitenoise" not in m]  # noqa: F405 (runserver serves static files)
