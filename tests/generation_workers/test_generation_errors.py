"""Transient vs deterministic errors: only the transient ones are retried."""

from __future__ import annotations

import errno

import botocore.exceptions
import kombu.exceptions
import pytest

from generation_workers.errors import is_transient
from generation_workers.tasks import retry_countdown
from model.layout import ModelRootMissingError


@pytest.mark.parametrize("exc", [
    botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3"),
    botocore.exceptions.ConnectTimeoutError(endpoint_url="http://s3"),
    botocore.exceptions.ReadTimeoutError(endpoint_url="http://s3"),
    botocore.exceptions.ConnectionClosedError(endpoint_url="http://s3"),
    kombu.exceptions.OperationalError("broker gone"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    OSError(errno.ENETUNREACH, "network unreachable"),
    TimeoutError("timed out"),
])
def test_transient(exc):
    assert is_transient(exc)


def _chained() -> Exception:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        except OSError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("exc", [
    ValueError("bad shape"), KeyError("preset"), FileNotFoundError("transformer/config.json"),
    ModelRootMissingError("model root missing"), PermissionError(errno.EACCES, "denied"), RuntimeError("CUDA OOM"),
    OSError(errno.ENOSPC, "disk full"),
])
def test_deterministic(exc):
    assert not is_transient(exc)


def test_explicit_cause_counts():
    assert is_transient(_chained())


def test_backoff_grows_and_is_capped():
    assert all(0.5 <= retry_countdown(0) <= 2.5 for _ in range(50))
    assert max(retry_countdown(20) for _ in range(200)) <= 300.5
