"""Which errors are worth a retry.

Transient (retried with exponential backoff): S3/HTTP connection problems (botocore's ``ConnectionError`` family,
``ConnectionClosedError``, read timeouts), the broker going away (``kombu.exceptions.OperationalError``), a database
connection dropped (``django.db.OperationalError``/``InterfaceError``), and network ``OSError``s (refused, reset,
unreachable, timed out, DNS). Everything else is deterministic (bad config, bad shapes, a missing checkpoint file, a
``FileNotFoundError``...) and fails the candidate at once: a retry would fail the same way.
"""

from __future__ import annotations

import errno
import socket

NETWORK_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET,
    errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ETIMEDOUT, errno.EPIPE, errno.EAGAIN,
}


class CandidateCancelled(Exception):
    """Raised from the progress callback to stop sampling when every candidate of the job was cancelled."""


def _transient_types() -> tuple[type[BaseException], ...]:
    import botocore.exceptions as boto
    import django.db
    import kombu.exceptions

    return (
        boto.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError ...
        boto.ConnectionClosedError,
        boto.ReadTimeoutError,
        kombu.exceptions.OperationalError,
        django.db.OperationalError,
        django.db.InterfaceError,
        ConnectionError,  # builtin: refused, reset, aborted, broken pipe
        TimeoutError,
        socket.gaierror,
    )


def is_transient(exc: BaseException) -> bool:
    """True for errors that may go away by themselves (see the module docstring)."""
    seen = set()
    while exc is not None and id(exc) not in seen:  # look through explicit "raise X from network_error" chains
        seen.add(id(exc))
        if isinstance(exc, _transient_types()):
            return True
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
            if exc.errno in NETWORK_ERRNOS:
                return True
        exc = exc.__cause__
    return False
