"""Finding 7: login lockout, throttles, expiring revocable API tokens, password change and reset, 401 for bad tokens."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.annotation.factories import annotator

pytestmark = pytest.mark.django_db
PASSWORD = "pw-123456"


def test_login_page_locks_the_account_after_repeated_wrong_passwords():
    user = annotator()
    client = Client()
    for _ in range(40):
        client.post("/accounts/login/", {"username": user.username, "password": "wrong"})
    res = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert res.status_code == 429
    assert "_auth_user_id" not in client.session
    # another account from the same address is not locked
    other = annotator()
    assert Client().post("/accounts/login/", {"username": other.username, "password": PASSWORD}).status_code == 302


def test_a_few_typos_do_not_lock_and_success_resets_the_count():
    user = annotator()
    client = Client()
    for _ in range(3):
        client.post("/accounts/login/", {"username": user.username, "password": "wrong"})
    assert client.post("/accounts/login/", {"username": user.username, "password": PASSWORD}).status_code == 302


def test_token_obtain_use_logout_revokes():
    user = annotator()
    res = APIClient().post("/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json")
    assert res.status_code == 201, res.content
    token = res.json()["token"]
    assert res.json()["expiry"]  # tokens expire
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/annotators/me/stats/").status_code == 200
    assert client.post("/api/auth/logout/").status_code == 204
    res = client.get("/api/annotators/me/stats/")
    assert res.status_code == 401 and res["WWW-Authenticate"] == "Token"


def test_logout_all_revokes_every_token_of_the_user():
    user = annotator()
    tokens = [AuthToken.objects.create(user=user)[1] for _ in range(3)]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {tokens[0]}")
    assert client.post("/api/auth/logout-all/").json() == {"revoked": 3}
    client.credentials(HTTP_AUTHORIZATION=f"Token {tokens[2]}")
    assert client.get("/api/annotators/me/stats/").status_code == 401


def test_expired_token_is_refused_with_401():
    user = annotator()
    instance, token = AuthToken.objects.create(user=user, expiry=timedelta(hours=1))
    AuthToken.objects.filter(pk=instance.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    res = client.get("/api/annotators/me/stats/")
    assert res.status_code == 401 and res["WWW-Authenticate"] == "Token"
    assert not AuthToken.objects.filter(pk=instance.pk).exists()


@pytest.mark.parametrize("header", ["Token nonsense", "Token " + "0" * 64, "Token ²²²", "Token"])
def test_bad_token_is_401_with_www_authenticate(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    res = client.get("/api/judgments/")
    assert res.status_code == 401 and res["WWW-Authenticate"] == "Token"
    assert "detail" in res.json()


def test_no_credentials_is_401_with_www_authenticate():
    res = APIClient().get("/api/judgments/")
    assert res.status_code == 401 and res["WWW-Authenticate"] == "Token"


def test_token_endpoint_wrong_password_then_lockout_then_throttle():
    user = annotator()
    client = APIClient()
    answers = [client.post("/api/auth/token/", {"username": user.username, "password": "wrong"}, format="json")
               for _ in range(5)]
    assert [a.status_code for a in answers] == [400] * 4 + [429]  # the 5th failure locks
    # locked out: even the right password gets no token
    res = client.post("/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json")
    assert res.status_code == 429 and "try again later" in res.json()["detail"]
    # the endpoint is throttled per address (10/min), whatever the account
    codes = [client.post("/api/auth/token/", {"username": "nobody", "password": "x"}, format="json").status_code
             for _ in range(6)]
    assert codes[-1] == 429 and "Retry-After" in client.post(
        "/api/auth/token/", {"username": "nobody", "password": "x"}, format="json")
    assert not AuthToken.objects.filter(user=user).exists()


def test_hot_endpoints_are_throttled_per_user(settings):
    from rest_framework.settings import api_settings
    from rest_framework.throttling import ScopedRateThrottle

    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "annotate": "3/min"}
    ScopedRateThrottle.THROTTLE_RATES = rates
    try:
        user = annotator()
        client = APIClient()
        client.force_authenticate(user)
        codes = [client.get("/api/groups/next/").status_code for _ in range(4)]
        assert codes[:3] == [204] * 3 and codes[3] == 429
        other = APIClient()
        other.force_authenticate(annotator())
        assert other.get("/api/groups/next/").status_code == 204
    finally:
        ScopedRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES


def test_password_reset_by_mail_and_change():
    user = annotator(email="ann@example.org")
    client = Client()
    assert client.get("/accounts/password/reset/").status_code == 200
    res = client.post("/accounts/password/reset/", {"email": "ann@example.org"})
    assert res.status_code == 302 and len(mail.outbox) == 1
    link = re.search(r"https?://[^/]+(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    res = client.get(link, follow=True)
    assert res.status_code == 200
    res = client.post(res.redirect_chain[-1][0], {"new_password1": "A-new-pass-9x", "new_password2": "A-new-pass-9x"})
    assert res.status_code == 302
    assert Client().post("/accounts/login/", {"username": user.username, "password": "A-new-pass-9x"}).status_code == 302

    client = Client()
    client.post("/accounts/login/", {"username": user.username, "password": "A-new-pass-9x"})
    res = client.post("/accounts/password/change/", {"old_password": "A-new-pass-9x", "new_password1": "Third-pass-7y",
                                                     "new_password2": "Third-pass-7y"})
    assert res.status_code == 302
    user.refresh_from_db()
    assert user.check_password("Third-pass-7y")


def test_console_email_backend_by_default():
    from django.conf import settings

    assert settings.EMAIL_BACKEND in ("django.core.mail.backends.console.EmailBackend",
                                      "django.core.mail.backends.locmem.EmailBackend")  # locmem: pytest-django
