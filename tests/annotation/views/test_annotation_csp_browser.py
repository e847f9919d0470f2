"""Finding 11: the Content-Security-Policy (django-csp) holds and htmx, the player and the charts work under it.

Chromium reports every blocked script, style or media load as a ``securitypolicyviolation`` event; the test collects
them from the first script of each page on, drives the annotator workbench through one judgment (htmx swap, video
playback) and opens the QC page with its charts as a researcher."""

import pytest
from django.conf import settings as django_settings
from django.test import Client

from annotation.models import Judgment
from tests.annotation.factories import RoundFactory, UserFactory, annotator

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
COLLECT = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
           "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
ALL_PLAYED = ("() => { const c = [...document.querySelectorAll('.cand')]; "
              "return c.length > 0 && c.every(e => e.classList.contains('played')); }")


def sign_in(page, live_server, user):
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME,
                               "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                               "url": live_server.url}])


def test_workbench_and_qc_work_under_the_csp_with_no_violation(page, live_server, media_group):
    page.add_init_script(COLLECT)
    rnd = RoundFactory(annotators_per_group=1, max_annotators_per_group=1, require_full_playback=True)
    media_group(k=2, round=rnd)
    media_group(k=2, round=rnd)
    user = annotator()
    sign_in(page, live_server, user)
    response = page.goto(f"{live_server.url}/annotate/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    page.wait_for_selector("#group-form")
    first = page.input_value("input[name=assignment]")
    page.wait_for_function(ALL_PLAYED, timeout=60_000)  # the videos played (media-src)
    page.keyboard.press("1")
    page.keyboard.press("p")
    page.keyboard.press("2")
    page.keyboard.press("n")
    page.keyboard.press("Enter")
    page.wait_for_function("(first) => { const a = document.querySelector('input[name=assignment]');"
                           " return a && a.value !== first; }", arg=first)  # htmx swapped the next group in
    assert Judgment.objects.filter(annotator=user).count() == 1
    assert page.evaluate("window.__csp") == []

    researcher = UserFactory(roles=["researcher", "reviewer"])
    sign_in(page, live_server, researcher)
    page.goto(f"{live_server.url}/qc/?round={rnd.pk}")
    page.wait_for_selector("#annotators")
    page.wait_for_timeout(500)
    assert page.evaluate("window.__csp") == []
    page.goto(f"{live_server.url}/research/")
    page.wait_for_timeout(500)
    assert page.evaluate("window.__csp") == []
