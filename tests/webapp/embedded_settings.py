"""Test settings that treat the configured database as the quick start's embedded one (annotation/management/schema.py
then migrates it on first use)."""

from webapp.settings.test import *  # noqa: F401,F403

EMBEDDED_DATABASE = True
