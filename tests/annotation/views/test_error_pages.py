"""Styled error pages (issue 18 item 6): Django's 403/404/500 handlers render the app's templates."""

import pytest
from django.test import RequestFactory
from django.views import defaults

from tests.annotation.factories import annotator

pytestmark = pytest.mark.django_db


def test_server_error_page_is_styled_without_a_request_context():
    response = defaults.server_error(RequestFactory().get("/"))
    body = response.content.decode()
    assert response.status_code == 500
    assert 'id="server-error"' in body and "app.css" in body and "Log out" not in body


def test_permission_denied_and_not_found_pages(client):
    client.force_login(annotator())
    response = client.get("/research/")
    assert response.status_code == 403 and b'id="forbidden"' in response.content and b"app.css" in response.content
    response = client.get("/definitely/missing/")
    assert response.status_code == 404 and b'id="not-found"' in response.content
    assert b'href="/qc/"' not in response.content  # an annotator's nav has no Quality/Review links
