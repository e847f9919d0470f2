"""Quick start on one machine (`make run`): DEBUG on, embedded services unless variables say otherwise."""

from webapp.env import env

env.ENVIRON.setdefault("DJANGO_DEBUG", "true")

from webapp.settings.base import *  # noqa: E402,F401,F403

STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
MIDDLEWARE = [m for m in MIDDLEWARE if "whitenoise" not in m]  # noqa: F405 (runserver serves static files)
