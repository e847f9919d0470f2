"""The login page loads in Chromium and the annotator can log in."""

from __future__ import annotations

import pytest

from annotation.services.accounts import user_create


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_login_page_in_chromium(live_server, page, artifacts_dir):
    user_create(username="annotator", password="annotate-me-2026", roles=["annotator"])
    response = page.goto(f"{live_server.url}/")
    assert response.status == 200
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "annotator")
    page.fill("#id_password", "annotate-me-2026")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert "annotator" in page.content()
    page.screenshot(path=str(artifacts_dir / "home.png"))
