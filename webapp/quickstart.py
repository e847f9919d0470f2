"""`make run`: the whole app on one machine with the embedded defaults (or the services named by the environment).

Starts the embedded PostgreSQL when ``DATABASE_URL`` is unset, migrates, creates the demo accounts and data, then runs
the web server on http://127.0.0.1:8000 and two real Celery workers (``gpu,text,vae`` and ``default,train`` with the
periodic scheduler). Ctrl-C stops everything it started. A second run reuses the data under ``.data/``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def wait_until_answering(url: str, server: subprocess.Popen, timeout_s: float = 120.0) -> bool:
    """True once ``url`` answers HTTP (any status: a redirect to the login page is an answer); False when the server
    exited or did not answer within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # 4xx/5xx is still the server answering
        except OSError:
            time.sleep(0.2)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("VIDEODPO_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("VIDEODPO_PORT", "8000")))
    parser.add_argument("--no-demo", action="store_true", help="skip the demo accounts and data")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")
    from webapp.embedded import embedded_database_running, embedded_database_stop, embedded_database_url
    from webapp.env import DATA_DIR

    started_database = False
    if not os.environ.get("DATABASE_URL"):
        was_running = embedded_database_running(DATA_DIR)
        log(f"DATABASE_URL unset: {'reusing' if was_running else 'starting'} the embedded PostgreSQL in {DATA_DIR / 'postgres'}")
        os.environ["DATABASE_URL"] = embedded_database_url(DATA_DIR)
        started_database = not was_running
    else:
        log("using DATABASE_URL from the environment")
    log("broker: " + ("CELERY_BROKER_URL from the environment" if os.environ.get("CELERY_BROKER_URL")
                      else f"embedded filesystem transport in {DATA_DIR / 'broker'}"))

    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], check=True, cwd=REPO)
    if not args.no_demo:
        subprocess.run([*manage, "seed_demo"], check=True, cwd=REPO)

    children: list[subprocess.Popen] = []
    celery = [sys.executable, "-m", "celery", "-A", "webapp", "worker", "--pool=solo", "--loglevel=INFO"]
    children.append(subprocess.Popen([*celery, "-Q", "gpu,text,vae", "-n", "gpu@%h"], cwd=REPO))
    children.append(subprocess.Popen([*celery, "-Q", "default,train", "-n", "default@%h", "-B",
                                      "--schedule", str(DATA_DIR / "celerybeat-schedule")], cwd=REPO))
    server = subprocess.Popen([*manage, "runserver", f"{args.host}:{args.port}", "--noreload"], cwd=REPO)
    children.append(server)
    url = f"http://{args.host}:{args.port}/"
    if wait_until_answering(url, server):  # the line a user clicks: only once the server listens
        log(f"web on {url}  (admin: /admin/, API docs: /api/docs/); Ctrl-C stops everything")
    else:
        log(f"the web server did not answer on {url} (see its output above); Ctrl-C stops everything")

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for child in children:
            if child.poll() is not None:
                log(f"{' '.join(child.args[:6])} exited with {child.returncode}; stopping the rest")
                exit_code = child.returncode or 1
                stopping = True
        time.sleep(0.5)

    log("stopping web server and workers")
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for child in children:
        try:
            child.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
    if started_database:
        log("stopping the embedded PostgreSQL")
        embedded_database_stop(DATA_DIR)
    log("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
