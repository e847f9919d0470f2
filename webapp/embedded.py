"""Embedded services for a machine with nothing installed but Python.

- PostgreSQL: the ``pgserver`` wheel ships a real server; its data live under ``VIDEODPO_DATA_DIR/postgres`` and it
  keeps running after the process that started it exits (a second start reuses it).
- Broker: kombu's filesystem transport (no server); folders under ``VIDEODPO_DATA_DIR/broker``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)


def embedded_database_url(data_dir: Path, database: str = "videodpo") -> str:
    """Start (or reuse) the embedded PostgreSQL and return a URL for ``database`` (created if absent)."""
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - pgserver is a runtime dependency
        raise ImproperlyConfigured("DATABASE_URL is unset and the embedded PostgreSQL (pgserver) is not installed.") from exc
    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    return server.get_uri(database)


def embedded_broker(data_dir: Path) -> tuple[str, dict]:
    """URL and transport options of the filesystem broker shared by the web process and the worker."""
    folder = Path(os.environ.get("VIDEODPO_BROKER_DIR") or data_dir / "broker")
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    options = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        "control_folder": str(folder / "control"),  # broadcast/pidbox exchanges (default is ./control)
    }
    return "filesystem://", options


def embedded_database_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError, PermissionError):
        return False
    return True


def embedded_database_stop(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL cleanly (``pg_ctl stop -m fast``)."""
    from pgserver._commands import pg_ctl

    pgdata = data_dir / "postgres"
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
