"""`make run`: the whole app on one machine with the embedded defaults (or the services named by the environment).

Starts the embedded PostgreSQL when ``DATABASE_URL`` is unset, migrates, creates the demo accounts and data, then runs
the web server on http://127.0.0.1:8000 and two real Celery workers (``gpu,text,vae`` and ``default,train`` with the
periodic scheduler). Ctrl-C stops everything it started. A second run reuses the data under ``.data/``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
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


WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]")  # every interface


def is_loopback(host: str) -> bool:
    bare = host.strip("[]")
    if bare.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine


def network_settings(host: str, environ: dict, names: list[str]) -> tuple[dict[str, str], list[str]]:
    """The settings a quick start listening on ``host`` needs that the environment does not give: on a loopback
    host nothing (the local settings: DEBUG on, this machine's names); beyond this machine DEBUG off (a debug page
    shows the code, the settings and every URL to whoever can reach the server) unless ``DJANGO_DEBUG`` says
    otherwise, and the allowed hosts are this machine's ``names`` (and ``host``) unless ``DJANGO_ALLOWED_HOSTS`` is
    set. -> (environment variables to set, lines to log)."""
    if is_loopback(host):
        return {}, []
    extra: dict[str, str] = {}
    lines: list[str] = []
    if "DJANGO_DEBUG" not in environ:
        extra["DJANGO_DEBUG"] = "false"
        lines.append(f"listening on {host}, beyond this machine: DEBUG off (error pages would show code and "
                     "settings to anyone who can reach it; DJANGO_DEBUG=true to keep them)")
    if "DJANGO_ALLOWED_HOSTS" not in environ:
        hosts = ["127.0.0.1", "localhost", "[::1]"]
        for name in ([] if host in WILDCARD_HOSTS else [host]) + names:
            if name and name not in hosts:
                hosts.append(f"[{name}]" if ":" in name and not name.startswith("[") else name)
        extra["DJANGO_ALLOWED_HOSTS"] = ",".join(hosts)
        lines.append(f"allowed host names: {', '.join(hosts)} (DJANGO_ALLOWED_HOSTS to name others)")
    return extra, lines


def this_machine_names() -> list[str]:
    """This machine's host names and the addresses they resolve to (what a browser elsewhere may type)."""
    names = [socket.gethostname(), socket.getfqdn()]
    try:
        names += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
    except OSError:
        pass
    try:  # the address of the interface this machine's traffic leaves by (a UDP "connect" sends nothing)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.254.254.254", 1))
            names.append(probe.getsockname()[0])
    except OSError:
        pass
    return list(dict.fromkeys(n for n in names if n and n != "0.0.0.0"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("VIDEODPO_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("VIDEODPO_PORT", "8000")))
    parser.add_argument("--no-demo", action="store_true", help="skip the demo accounts and data")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")
    # the names are looked up (DNS) only when the server listens beyond this machine
    names = [] if is_loopback(args.host) else this_machine_names()
    network, lines = network_settings(args.host, dict(os.environ), names)
    os.environ.update(network)
    for line in lines:
        log(line)
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
    # with DEBUG off runserver serves the static files only when told to (the quick start has no other server)
    from environ import Env

    debug = os.environ.get("DJANGO_DEBUG", "true").strip().lower() in Env.BOOLEAN_TRUE_STRINGS
    insecure = [] if debug else ["--insecure"]
    server = subprocess.Popen([*manage, "runserver", f"{args.host}:{args.port}", "--noreload", *insecure], cwd=REPO)
    children.append(server)
    url = f"http://{'127.0.0.1' if args.host in WILDCARD_HOSTS else args.host}:{args.port}/"
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
