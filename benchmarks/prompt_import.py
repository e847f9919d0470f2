"""Prompt import benchmark: a 1M-line TXT file imported as a background job by a real Celery worker.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/x CELERY_BROKER_URL=redis://127.0.0.1:6379/N \\
        python benchmarks/prompt_import.py [--lines 1000000] [--db prompt_import_bench]

A fresh database ``--db`` on the server of DATABASE_URL (dropped and migrated each run), local storage in a temporary
folder. The file (unique prompts of ~60 bytes) is handed to ``prompt_import_start`` like an upload (stored first), then
one ``celery worker --pool=solo`` child (queue ``default``) streams, checks and commits it. The worker runs the job in
its own process, so its peak RSS (``os.wait4`` rusage of that child, after it stops) is the import's memory. Prints
the figures and, last, one JSON line. Goal: peak RSS < 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def fresh_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(with_db(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def write_file(path: Path, lines: int) -> int:
    subjects = ["a red fox", "two herons", "an old lighthouse", "a paper boat", "a city tram", "a glass of tea"]
    actions = ["in the rain", "at dawn", "under neon lights", "on a windy hill", "in slow motion", "seen from above"]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(lines):
            fh.write(f"{subjects[i % 6]} {actions[i // 6 % 6]}, take {i}, cinematic\n")
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--db", default="prompt_import_bench")
    args = parser.parse_args()
    base_url = os.environ["DATABASE_URL"]
    fresh_database(base_url, args.db)
    work = Path(tempfile.mkdtemp(prefix="prompt-import-bench-"))
    env = {**os.environ, "DATABASE_URL": with_db(base_url, args.db), "DJANGO_SETTINGS_MODULE": "webapp.settings.test",
           "DJANGO_MEDIA_ROOT": str(work / "media"), "VIDEODPO_IMPORT_MAX_BYTES": str(1 << 30),
           "PYTHONUNBUFFERED": "1"}
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from annotation.models import Prompt, PromptImport
    from annotation.services.prompt_imports import prompt_import_start
    from webapp.celery import app

    app.control.purge()
    path = work / "prompts.txt"
    size = write_file(path, args.lines)
    print(f"file: {args.lines} lines, {size / 1e6:.1f} MB")
    log = open(work / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", "default", "--pool=solo", "--loglevel=INFO",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"bench-{os.getpid()}@%h"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "ready." not in (work / "worker.log").read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((work / "worker.log").read_text()[-3000:])
            time.sleep(0.2)
        t0 = time.monotonic()
        with open(path, "rb") as fh:
            job, _ = prompt_import_start(file=fh, filename=path.name, size=size, fmt="txt")
        store_s = time.monotonic() - t0
        while True:
            job.refresh_from_db()
            if job.status not in (PromptImport.Status.QUEUED, PromptImport.Status.RUNNING):
                break
            if worker.poll() is not None:
                raise SystemExit("the worker died:\n" + (work / "worker.log").read_text()[-3000:])
            time.sleep(0.5)
        total_s = time.monotonic() - t0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        _, _, usage = os.wait4(worker.pid, 0)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    created = Prompt.objects.count()
    print(f"status: {job.status} {job.error}".rstrip())
    print(f"store upload: {store_s:.1f} s; queued -> done: {total_s:.1f} s ({args.lines / total_s:,.0f} lines/s)")
    print(f"prompts created: {created}; worker CPU: {usage.ru_utime + usage.ru_stime:.1f} s; "
          f"worker peak RSS: {peak_mb:.0f} MB (goal < 300)")
    print(f"benchmark process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(json.dumps({"lines": args.lines, "mb": round(size / 1e6, 1), "status": job.status, "created": created,
                      "import_s": round(total_s, 1), "worker_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                      "worker_peak_rss_mb": round(peak_mb)}))


if __name__ == "__main__":
    main()
