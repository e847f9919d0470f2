"""Schemathesis against the app's own OpenAPI schema (drf-spectacular), in process, with an annotator's and a
researcher's token: bounded examples per operation, a fixed seed. Every answer must not be a 5xx and must match the
documented response schema."""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test.utils import override_settings
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from knox.models import AuthToken
from rest_framework.throttling import ScopedRateThrottle

from tests.annotation.factories import UserFactory, annotator, group_with_candidates

MAX_EXAMPLES = 5


def _schema():
    spec = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    loaded = schemathesis.openapi.from_dict(spec)
    from webapp.wsgi import application

    loaded.app = application
    return loaded


schema = _schema()


@pytest.fixture
def tokens(db, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"auth": "100000/min", "annotate": "100000/min",
                                                                 "research": "100000/min"})
    request_started.disconnect(close_old_connections)  # as Django's test client does: keep the test transaction
    request_finished.disconnect(close_old_connections)
    group_with_candidates(k=2)
    ann, res = annotator(), UserFactory(roles=["researcher", "reviewer"])
    yield [AuthToken.objects.create(user=ann)[1], AuthToken.objects.create(user=res)[1]]
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@override_settings(ALLOWED_HOSTS=["*"])
def test_api_has_no_server_errors_and_matches_its_schema(case, tokens):
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    for token in tokens:
        response = case.call_and_validate(headers={"Authorization": f"Token {token}"},
                                          checks=[not_a_server_error, response_schema_conformance])
        if os.environ.get("VIDEODPO_FUZZ_LOG"):  # one line per request, for counting
            with open(os.environ["VIDEODPO_FUZZ_LOG"], "a") as log:
                log.write(f"{case.method} {case.path} {response.status_code}\n")
