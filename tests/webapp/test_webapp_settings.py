"""Settings load in each mode; bad values fail at start with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROD_ENV = {
    "DJANGO_SECRET_KEY": "x7#kq!v2m9@p4z8w1r6t3y5u0i-o_a&s*d(f)g+h=j~l^c%b$n" * 2,
    "DJANGO_ALLOWED_HOSTS": "feedback.example.org",
    "DATABASE_URL": os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "AWS_STORAGE_BUCKET_NAME": "videos",
    "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
}


def run_manage(args: list[str], env: dict[str, str], settings_module: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AWS_", "STORAGE_"))}
    full_env.update(env)
    full_env["DJANGO_SETTINGS_MODULE"] = settings_module
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("module", ["webapp.settings.local", "webapp.settings.test", "webapp.settings.production"])
def test_settings_load_in_each_mode(module):
    result = run_manage(["check"], PROD_ENV, module)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_check_deploy_has_no_warnings():
    result = run_manage(["check", "--deploy", "--fail-level", "WARNING"], PROD_ENV, "webapp.settings.production")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_production_refuses_a_weak_secret_key():
    result = run_manage(["check"], {**PROD_ENV, "DJANGO_SECRET_KEY": "short"}, "webapp.settings.production")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set to 50+ random characters" in result.stderr


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("DATABASE_URL", "mysql://root@localhost/db", "DATABASE_URL='mysql://root@localhost/db' is not a PostgreSQL URL"),
        ("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/", "names no database"),
        ("CELERY_BROKER_URL", "kafka://127.0.0.1:9092", "CELERY_BROKER_URL='kafka://127.0.0.1:9092' has an unknown scheme"),
        ("STORAGE_BACKEND", "ftp", "STORAGE_BACKEND='ftp' is unknown: expected one of s3, local"),
    ],
)
def test_malformed_setting_fails_at_start_naming_the_variable(variable, value, message):
    result = run_manage(["check"], {**PROD_ENV, variable: value}, "webapp.settings.local")
    assert result.returncode != 0
    assert message in result.stderr


def test_unreachable_database_fails_with_a_clear_message():
    env = {**PROD_ENV, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}
    result = run_manage(["migrate", "--check"], env, "webapp.settings.local")
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr and "127.0.0.1:1" in result.stderr


def test_no_missing_migrations():
    result = run_manage(["makemigrations", "--check", "--dry-run"], PROD_ENV, "webapp.settings.test")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_pages_name_an_icon_and_favicon_ico_leads_to_it(client):
    res = client.get("/favicon.ico")
    assert res.status_code == 301 and res["Location"].endswith("annotation/favicon.svg")
    assert 'rel="icon" type="image/svg+xml"' in client.get("/accounts/login/").content.decode()
