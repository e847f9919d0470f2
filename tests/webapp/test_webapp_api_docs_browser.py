"""/api/docs/ (Swagger UI) renders under the app's Content-Security-Policy (script-src/style-src 'self', no
exception): the init script comes as a file (SpectacularSwaggerSplitView) and the page has no inline style."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from django.test import Client

from tests.annotation.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
COLLECT = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
           "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def test_swagger_ui_renders_operations_with_no_csp_violation(page, live_server):
    researcher = UserFactory(roles=["researcher"])
    client = Client()
    client.force_login(researcher)
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME,
                               "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                               "url": live_server.url}])
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.add_init_script(COLLECT)
    response = page.goto(f"{live_server.url}/api/docs/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<style" not in response.text() and "<script>" not in response.text()
    page.wait_for_selector(".opblock", state="visible", timeout=30_000)
    assert page.locator(".opblock").count() > 10  # the operations of the schema, rendered
    page.wait_for_timeout(300)
    assert page.evaluate("window.__csp") == []
    assert not [m for m in console if "Content Security Policy" in m or "Content-Security-Policy" in m], console
