"""Findings 11 and 12: deployment settings, roles in the admin, the installation secret, pseudonyms, demo accounts."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from knox.models import AuthToken
from rest_framework.test import APIClient

from annotation.models import Candidate, Round, RoundEvent
from annotation.services.accounts import pseudonym_for
from tests.annotation.factories import CandidateFactory, GroupFactory, RoundFactory, UserFactory, annotator

REPO = Path(__file__).resolve().parents[2]
PROD_ENV = {
    "DJANGO_SECRET_KEY": "x7#kq!v2m9@p4z8w1r6t3y5u0i-o_a&s*d(f)g+h=j~l^c%b$n" * 2,
    "DJANGO_ALLOWED_HOSTS": "feedback.example.org",
    "DATABASE_URL": os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
}


def django_print(expr: str, env: dict[str, str], module: str) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AWS_", "STORAGE_", "VIDEODPO_"))}
    full.update(env, DJANGO_SETTINGS_MODULE=module)
    code = f"import django; django.setup(); from django.conf import settings; print({expr})"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_proxy_ssl_header_trusted_only_when_configured():
    expr = "getattr(settings, 'SECURE_PROXY_SSL_HEADER', None)"
    assert django_print(expr, PROD_ENV, "webapp.settings.production") == "None"
    behind = {**PROD_ENV, "DJANGO_BEHIND_TLS_PROXY": "true"}
    assert django_print(expr, behind, "webapp.settings.production") == "('HTTP_X_FORWARDED_PROTO', 'https')"


def test_api_schema_and_docs_need_a_signed_in_user_in_production():
    expr = "settings.SPECTACULAR_SETTINGS['SERVE_PERMISSIONS']"
    assert "IsAuthenticated" in django_print(expr, PROD_ENV, "webapp.settings.production")
    assert "AllowAny" in django_print(expr, {**PROD_ENV, "DJANGO_DEBUG": "true"}, "webapp.settings.local")


@pytest.mark.django_db
def test_api_schema_refuses_anonymous_and_serves_a_token_holder():
    # the test settings are DEBUG off: the production rule
    assert APIClient().get("/api/schema/").status_code == 401
    assert Client().get("/api/docs/").status_code in (401, 403)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=annotator())[1]}")
    assert client.get("/api/schema/").status_code == 200


def test_secret_key_is_random_per_installation_and_kept(tmp_path):
    env = {"VIDEODPO_DATA_DIR": str(tmp_path / "a"), "DATABASE_URL": PROD_ENV["DATABASE_URL"]}
    first = django_print("settings.SECRET_KEY", env, "webapp.settings.local")
    assert len(first) >= 50 and "insecure" not in first
    assert django_print("settings.SECRET_KEY", env, "webapp.settings.local") == first  # kept across starts
    path = tmp_path / "a" / "secret_key"
    assert path.read_text().strip() == first and stat.S_IMODE(path.stat().st_mode) == 0o600
    other = django_print("settings.SECRET_KEY", {**env, "VIDEODPO_DATA_DIR": str(tmp_path / "b")}, "webapp.settings.local")
    assert other != first


def test_pseudonyms_are_keyed_by_the_installation_secret(settings):
    settings.SECRET_KEY = "k" * 60
    a = pseudonym_for(user_id=7)
    assert a == pseudonym_for(user_id=7) and a != pseudonym_for(user_id=8)
    old_fixed_key = "insecure-local-development-key-change-me"
    assert a != "ann-" + hashlib.sha256(f"{old_fixed_key}:annotator:7".encode()).hexdigest()[:12]
    assert a != "ann-" + hashlib.sha256(f"{settings.SECRET_KEY}:annotator:7".encode()).hexdigest()[:12]
    settings.SECRET_KEY = "m" * 60
    assert pseudonym_for(user_id=7) != a


@pytest.mark.django_db
def test_admin_role_cannot_edit_users_or_make_superusers():
    role = Group.objects.get(name="admin")  # as the migrations left it
    codenames = set(role.permissions.values_list("content_type__app_label", "codename"))
    assert ("auth", "view_user") in codenames
    assert not {c for c in codenames if c[0] == "auth" and not c[1].startswith("view_")}
    staff = UserFactory(roles=["admin"])
    staff.is_staff = True
    staff.save()
    victim = annotator()
    assert not staff.has_perm("auth.change_user")
    client = Client()
    client.force_login(staff)
    res = client.post(f"/admin/auth/user/{victim.pk}/change/", {"username": victim.username, "is_superuser": "on",
                                                                "is_staff": "on", "is_active": "on"})
    assert res.status_code == 403
    victim.refresh_from_db()
    assert not victim.is_superuser


@pytest.mark.django_db
def test_admin_statuses_are_read_only_and_transitions_go_through_services():
    researcher = UserFactory(roles=["researcher"])
    researcher.is_staff = True
    researcher.save()
    rnd = RoundFactory(status=Round.Status.GENERATING)
    group = GroupFactory(round=rnd)
    CandidateFactory(group=group, status=Candidate.Status.QUEUED, video_uri="")
    client = Client()
    client.force_login(researcher)
    page = client.get(f"/admin/annotation/round/{rnd.pk}/change/").content.decode()
    assert 'name="status"' not in page  # shown, not editable
    page = client.get(f"/admin/annotation/candidategroup/{group.pk}/change/").content.decode()
    assert 'name="judgments_count"' not in page and 'name="active_reservations"' not in page
    res = client.post("/admin/annotation/round/", {"action": "round_cancel", "_selected_action": [rnd.pk]})
    assert res.status_code == 302
    rnd.refresh_from_db()
    assert rnd.status == Round.Status.CANCELLED
    assert RoundEvent.objects.filter(round=rnd, to_status="cancelled", actor=researcher).exists()
    assert not Candidate.objects.filter(group=group, status=Candidate.Status.QUEUED).exists()


@pytest.mark.django_db
def test_admin_regex_lookup_is_a_4xx_not_a_500():
    admin = get_user_model().objects.create_superuser("root", "root@example.org", "pw-123456")
    client = Client()
    client.force_login(admin)
    res = client.get("/admin/annotation/prompt/?text__regex=(")
    assert res.status_code == 400


@pytest.mark.django_db
def test_demo_accounts_created_once_researcher_not_superuser_admin_password_printed_once():
    out = io.StringIO()
    call_command("seed_demo", "--no-round", stdout=out)
    first = out.getvalue()
    User = get_user_model()
    researcher = User.objects.get(username="researcher")
    assert not researcher.is_superuser and researcher.groups.filter(name="researcher").exists()
    admin = User.objects.get(username="admin")
    assert admin.is_superuser
    line = next(ln for ln in first.splitlines() if ln.strip().startswith("admin "))
    admin_password = line.split()[1]
    assert admin.check_password(admin_password) and admin_password not in ("admin", "admin-demo-2026")
    researcher.set_password("my-own-password-1")
    researcher.save()
    out = io.StringIO()
    call_command("seed_demo", "--no-round", stdout=out)
    again = out.getvalue()
    assert admin_password not in again and "researcher-demo-2026" not in again
    researcher.refresh_from_db()
    assert researcher.check_password("my-own-password-1")  # a changed password survives restarts
    assert User.objects.get(username="admin").check_password(admin_password)


def test_make_run_passes_no_demo():
    res = subprocess.run(["make", "-n", "run", "NO_DEMO=1"], cwd=REPO, capture_output=True, text=True)
    assert "webapp.quickstart --no-demo" in res.stdout
