"""A management command on a database that was never migrated (a fresh clone after `make test`): the embedded
database is migrated first, any other one gets one line saying what to run, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_database(django_db_blocker):
    """A new, empty database on the tests' PostgreSQL server; its URL."""
    from django.db import connection

    from webapp.env import database_url_from_settings

    name = f"fresh_{uuid.uuid4().hex[:10]}"
    with django_db_blocker.unblock():
        admin = database_url_from_settings({**connection.settings_dict, "NAME": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url_from_settings({**connection.settings_dict, "NAME": name})
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(args: list[str], url: str, settings_module: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": settings_module}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_database_that_is_not_the_embedded_one_gets_one_line_saying_what_to_run(empty_database, tmp_path):
    result = manage(["export_preferences", "--format", "trl", "--out", str(tmp_path / "x.jsonl")], empty_database,
                    "webapp.settings.test")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "auth_group" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run `python manage.py migrate` first" in lines[0], result.stderr


def test_the_embedded_database_is_migrated_on_first_use(empty_database, tmp_path):
    result = manage(["export_preferences", "--format", "trl", "--out", str(tmp_path / "x.jsonl")], empty_database,
                    "tests.webapp.embedded_settings")
    assert "unapplied migration(s): migrating it first" in result.stdout, result.stdout + result.stderr
    # the schema is there now: the command went on and refused an empty result with its own message
    assert result.returncode == 1 and "Nothing to export" in result.stderr and "Traceback" not in result.stderr
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'annotation'").fetchone()[0] >= 3
