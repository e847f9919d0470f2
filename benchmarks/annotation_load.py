"""Load benchmark of the annotator hot path (next group + submit) over HTTP on loopback.

1. Creates a fresh PostgreSQL database, migrates it, seeds ``--groups`` groups x ``--candidates`` candidates and
   ``--judgments`` historical judgments server-side (INSERT ... SELECT generate_series, no Python loop);
2. serves the app with gunicorn (gthread: one worker per core x ``--threads``, DEBUG off, ``webapp.settings.local`` with
   DJANGO_DEBUG=false);
3. drives it with an asyncio load generator (raw asyncio streams, HTTP/1.1 keep-alive, token auth):
   (1) one annotator, no think time; (2) ``--users`` annotators, closed loop; (3) ``--open-users`` annotators,
   open loop, one group every ``--think-s`` seconds each;
4. checks judgments added == accepted submits and no (group, annotator) twice; prints the figures and a final JSON line,
   with the server CPU per cycle (gunicorn + PostgreSQL backends, from /proc: comparable on a shared machine).

Quick run:  .venv/bin/python benchmarks/annotation_load.py --groups 20000 --judgments 200000 --duration 15
Full run:   .venv/bin/python benchmarks/annotation_load.py            (100k groups x 4, 1M judgments, 60 s phases)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


# -- database -----------------------------------------------------------------------------------------------------------
def bench_database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def recreate_database(base_url: str, name: str) -> None:
    import psycopg

    admin = bench_database_url(base_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


SEED_SQL = """
INSERT INTO annotation_checkpoint (created_at, updated_at, name, uri, preset, kind, config, metrics)
VALUES (now(), now(), 'bench-ckpt', 'file:///dev/null', 'tiny', 'base', '{{}}', '{{}}');
INSERT INTO annotation_round (created_at, updated_at, name, kind, status, policy_checkpoint_id, preset, num_steps, cfg_scale,
    shift, height, width, num_frames, fps, seeds_per_prompt, base_seed, annotators_per_group, max_annotators_per_group,
    gold_rate, annotation_mode, require_full_playback, exclude_flagged, config)
SELECT now(), now(), 'bench-round', 'generation', 'annotating', id, 'tiny', 10, 5.0, 17.0, 64, 64, 50, 25, {k}, 0,
    {target}, {target}, 0.0, 'labels', false, true, '{{}}' FROM annotation_checkpoint WHERE name = 'bench-ckpt';
INSERT INTO annotation_prompt (created_at, updated_at, text, text_hash, language, source, tags, is_active, is_held_out)
SELECT now(), now(), 'benchmark prompt ' || g, md5('p' || g) || md5('q' || g), 'en', 'hand_written', '{{}}', true, false
FROM generate_series(1, {groups}) g;
INSERT INTO annotation_candidategroup (created_at, updated_at, round_id, prompt_id, status, is_gold, gold_answer,
    target_judgments, active_reservations, judgments_count)
SELECT now(), now(), r.id, p.id, CASE WHEN p.id <= {done_groups} THEN 'done' ELSE 'ready' END, false, '{{}}',
    {target}, 0, CASE WHEN p.id <= {done_groups} THEN {per_done} ELSE 0 END
FROM annotation_prompt p, annotation_round r ORDER BY p.id;
INSERT INTO annotation_candidate (created_at, updated_at, group_id, checkpoint_id, seed, status, progress_step, progress_total,
    video_uri, poster_uri, sprite_uri, latent_uri, text_embedding_uri, duration_s, num_frames, fps, screening_flags,
    screening_metrics, prompt_truncated, error, attempts)
SELECT now(), now(), g.id, c.id, s, 'ready', 10, 10, 'rounds/' || g.round_id || '/groups/' || g.id || '/candidates/' || s || '/video.mp4',
    '', '', '', '', 2.0, 50, 25, '{{}}', '{{}}', false, '', 1
FROM annotation_candidategroup g, annotation_checkpoint c, generate_series(0, {k} - 1) s ORDER BY g.id, s;
"""

HISTORY_SQL = """
INSERT INTO annotation_assignment (group_id, annotator_id, status, shown_order, reserved_at, expires_at, submitted_at)
SELECT g.id, u.id, 'submitted', '{{}}', now(), now(), now()
FROM annotation_candidategroup g
JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM auth_user WHERE username LIKE 'hist%') u ON u.n <= {per_done}
WHERE g.status = 'done';
INSERT INTO annotation_judgment (assignment_id, group_id, annotator_id, outcome, skip_reason, time_spent_ms, reviewer_decision, created_at)
SELECT a.id, a.group_id, a.annotator_id, CASE WHEN a.id % 7 = 0 THEN 'all_good' ELSE 'labelled' END, '', 8000 + a.id % 5000, false, now()
FROM annotation_assignment a;
"""


def seed(args, db_url: str) -> dict:
    import psycopg

    # 90% of the groups carry the historical judgments (status done); the rest are the live queue
    per_done = max(1, -(-args.judgments // max(1, int(args.groups * 0.9))))
    args.target = max(args.target, per_done + 1)
    done_groups = min(int(args.groups * 0.9), -(-args.judgments // per_done))
    judgments = done_groups * per_done
    with psycopg.connect(db_url, autocommit=True) as conn:
        t0 = time.monotonic()
        conn.execute(SEED_SQL.format(k=args.candidates, target=args.target, groups=args.groups,
                                     done_groups=done_groups, per_done=per_done))
        log(f"seeded {args.groups} groups x {args.candidates} candidates in {time.monotonic() - t0:.1f} s")
    return {"done_groups": done_groups, "per_done": per_done, "history_judgments": judgments}


def django_setup(db_url: str) -> None:
    os.environ["DATABASE_URL"] = db_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings.local"
    os.environ["DJANGO_DEBUG"] = "false"
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def make_users(args, seed_info: dict, db_url: str) -> list[str]:
    """History annotators (rows only) and live annotators with API tokens; returns the live tokens."""
    import psycopg
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, User
    from knox.models import AuthToken, get_digest_token
    from knox.settings import CONSTANTS

    from annotation.models import AnnotatorProfile
    from annotation.services.accounts import pseudonym_for

    password = make_password("bench-password")
    n_live = 1 + args.users + args.open_users
    users = [User(username=f"hist{i}", password=password) for i in range(seed_info["per_done"])]
    users += [User(username=f"live{i}", password=password) for i in range(n_live)]
    users = User.objects.bulk_create(users, batch_size=2000)
    group = Group.objects.get(name="annotator")
    User.groups.through.objects.bulk_create([User.groups.through(user_id=u.pk, group_id=group.pk) for u in users])
    AnnotatorProfile.objects.bulk_create([AnnotatorProfile(user=u, pseudonym=pseudonym_for(user_id=u.pk)) for u in users])
    live = [u for u in users if u.username.startswith("live")]
    keys = [get_digest_token() for _ in live]  # (digest, token): knox stores only the digest
    AuthToken.objects.bulk_create([AuthToken(user=u, digest=digest, token_key=token[: CONSTANTS.TOKEN_KEY_LENGTH])
                                   for u, (digest, token) in zip(live, keys, strict=True)])
    t0 = time.monotonic()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(HISTORY_SQL.format(per_done=seed_info["per_done"]))
        conn.execute("ANALYZE")
    log(f"seeded {seed_info['history_judgments']} judgments (+ assignments) in {time.monotonic() - t0:.1f} s")
    return [token for _, token in keys]


def queries_per_request(tokens: list[str]) -> dict:
    """Queries of one next + one submit (in process, steady state: the reservations already exist), and of the next
    that follows a submit, as in every cycle of the load phases (it reserves one more group to keep the lookahead)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    client = APIClient(SERVER_NAME="127.0.0.1")
    client.credentials(HTTP_AUTHORIZATION=f"Token {tokens[-1]}")
    client.get("/api/groups/next/")  # first call reserves current + lookahead
    counts = {}
    for name in ("next", "submit"):
        with CaptureQueriesContext(connection) as ctx:
            if name == "next":
                body = client.get("/api/groups/next/").json()
            else:
                res = client.post("/api/judgments/submit/", submit_body(body), format="json")
                assert res.status_code == 201, res.content
        counts[name] = len(ctx.captured_queries)
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/api/groups/next/").status_code == 200
    counts["next_after_submit"] = len(ctx.captured_queries)
    return counts


def submit_body(body: dict) -> dict:
    return {
        "assignment": body["assignment"], "outcome": "labelled", "time_spent_ms": 9000,
        "labels": [{"position": 0, "label": "preferred", "playback_coverage": 1.0},
                   {"position": 1, "label": "non_preferred", "playback_coverage": 1.0}],
    }


# -- HTTP client on asyncio streams ---------------------------------------------------------------------------------------
class Connection:
    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def request(self, method: str, path: str, token: str, body: bytes = b"") -> tuple[int, bytes]:
        for attempt in range(2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
            try:
                self.writer.write(head.encode() + body)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionResetError("closed")
                status = int(status_line.split()[1])
                length, close = 0, False
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "connection" and value.strip().lower() == "close":
                        close = True
                data = await self.reader.readexactly(length) if length else b""
                if close:
                    self.close()
                return status, data
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Stats:
    def __init__(self):
        self.next_ms: list[float] = []
        self.submit_ms: list[float] = []
        self.accepted = 0
        self.errors: dict[str, int] = {}
        self.cycles = 0
        self.empty = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def cycle(conn: Connection, token: str, stats: Stats) -> None:
    t0 = time.perf_counter()
    status, data = await conn.request("GET", "/api/groups/next/", token)
    stats.next_ms.append((time.perf_counter() - t0) * 1000)
    if status == 204:
        stats.empty += 1
        return
    if status != 200:
        stats.error(f"next {status}")
        return
    body = json.dumps(submit_body(json.loads(data))).encode()
    t1 = time.perf_counter()
    status, data = await conn.request("POST", "/api/judgments/submit/", token, body)
    stats.submit_ms.append((time.perf_counter() - t1) * 1000)
    if status in (200, 201):  # 200: a retried POST whose first attempt was stored (idempotent replay)
        stats.accepted += 1
        stats.cycles += 1
    else:
        stats.error(f"submit {status}: {data[:120]!r}")


async def closed_loop(port: int, tokens: list[str], duration: float) -> Stats:
    stats, deadline = Stats(), time.monotonic() + duration

    async def user(token):
        conn = Connection(port)
        while time.monotonic() < deadline:
            await cycle(conn, token, stats)
        conn.close()

    await asyncio.gather(*(user(t) for t in tokens))
    return stats


async def open_loop(port: int, tokens: list[str], duration: float, think_s: float, pool_size: int) -> Stats:
    """Each annotator starts a cycle every ``think_s`` seconds (randomly phased), whatever the response times."""
    stats, start = Stats(), time.monotonic()
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(pool_size):
        pool.put_nowait(Connection(port))

    async def user(token):
        t = start + random.uniform(0, think_s)
        tasks = []
        while t < start + duration:
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            tasks.append(asyncio.create_task(one(token)))
            t += think_s
        await asyncio.gather(*tasks)

    async def one(token):
        conn = await pool.get()
        try:
            await cycle(conn, token, stats)
        finally:
            pool.put_nowait(conn)

    await asyncio.gather(*(user(t) for t in tokens))
    while not pool.empty():
        pool.get_nowait().close()
    return stats


# -- server CPU per cycle (Linux /proc; PostgreSQL counted only when it runs on this machine) ------------------------------
def _proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


class ServerCpu:
    """CPU seconds used by the gunicorn master and workers, and by the PostgreSQL backends of the bench database."""

    def __init__(self, gunicorn_pid: int, connection):
        self.gunicorn_pid, self.connection = gunicorn_pid, connection

    def sample(self) -> dict[str, dict[int, float]]:
        app = {pid: _proc_cpu_s(pid) for pid in [self.gunicorn_pid, *_children(self.gunicorn_pid)]}
        with self.connection.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            db = {pid: _proc_cpu_s(pid) for (pid,) in cur.fetchall()}
        return {"app": app, "db": db}

    @staticmethod
    def per_cycle_ms(before: dict, after: dict, cycles: int) -> dict:
        out = {}
        for part in ("app", "db"):
            used = sum(t - before[part].get(pid, 0.0) for pid, t in after[part].items())
            out[part] = round(1000 * used / max(cycles, 1), 2)
        return out


def summary(stats: Stats, seconds: float) -> dict:
    both = stats.next_ms + stats.submit_ms
    return {
        "cycles": stats.cycles, "cycles_per_s": round(stats.cycles / seconds, 1), "empty": stats.empty,
        "errors": stats.errors,
        "next_ms": {q: round(percentile(stats.next_ms, q), 2) for q in (50, 95, 99)},
        "submit_ms": {q: round(percentile(stats.submit_ms, q), 2) for q in (50, 95, 99)},
        "all_ms": {q: round(percentile(both, q), 2) for q in (50, 95, 99)},
        "mean_ms": round(statistics.fmean(both), 2) if both else None,
    }


# -- main --------------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--judgments", type=int, default=1_000_000)
    parser.add_argument("--target", type=int, default=20, help="annotators per live group (raised above the history's)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--users", type=int, default=32, help="closed-loop annotators (saturation phase)")
    parser.add_argument("--open-users", type=int, default=1000)
    parser.add_argument("--think-s", type=float, default=10.0)
    # One gunicorn process per core (a process runs Python on one core at a time), threads to overlap database waits:
    # on 2 cores, 2 x 4 used 13-25% less CPU per cycle under saturation than 4 x 4 (less GIL and context-switch churn).
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pool", type=int, default=64, help="keep-alive connections of the open-loop generator")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--database-name", default="annotation_bench")
    args = parser.parse_args()

    db_url = bench_database_url(args.database_url, args.database_name)
    recreate_database(args.database_url, args.database_name)
    env = {**os.environ, "DATABASE_URL": db_url, "DJANGO_SETTINGS_MODULE": "webapp.settings.local", "DJANGO_DEBUG": "false",
           "DJANGO_LOG_LEVEL": "WARNING", "DJANGO_CONN_MAX_AGE": "600", "VIDEODPO_RESERVATION_TTL_S": "3600",
           # the generator's annotators have no think time: the per-user throttle is still checked on every call,
           # with a rate they cannot reach
           "VIDEODPO_THROTTLE_ANNOTATE": "1000000/min"}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
    log(f"migrated in {time.monotonic() - t0:.1f} s")
    seed_info = seed(args, db_url)
    django_setup(db_url)
    tokens = make_users(args, seed_info, db_url)
    qpr = queries_per_request(tokens)
    log(f"queries per request: {qpr}")

    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM annotation_judgment")
        judgments_before = cur.fetchone()[0]
    connection.close()

    port = free_port()
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(args.workers),
         "--worker-class", "gthread", "--threads", str(args.threads), "--keep-alive", "75", "--backlog", "2048",
         "--log-level", "warning"],
        cwd=REPO, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        log(f"gunicorn on :{port} ({args.workers} workers x {args.threads} threads)")
        single_tokens, sat_tokens = tokens[:1], tokens[1 : 1 + args.users]
        open_tokens = tokens[1 + args.users :]
        warm = asyncio.run(closed_loop(port, single_tokens, 2.0))  # warm-up (connections, caches); counted below
        results = {}
        cpu = ServerCpu(gunicorn.pid, connection)
        c0, t = cpu.sample(), time.monotonic()
        s = asyncio.run(closed_loop(port, single_tokens, args.duration))
        results["single"] = summary(s, time.monotonic() - t)
        results["single"]["server_cpu_ms_per_cycle"] = cpu.per_cycle_ms(c0, cpu.sample(), s.cycles)
        log(f"single: {results['single']}")
        c0, t = cpu.sample(), time.monotonic()
        sat = asyncio.run(closed_loop(port, sat_tokens, args.duration))
        results["saturation"] = summary(sat, time.monotonic() - t)
        results["saturation"]["server_cpu_ms_per_cycle"] = cpu.per_cycle_ms(c0, cpu.sample(), sat.cycles)
        log(f"saturation: {results['saturation']}")
        c0, t = cpu.sample(), time.monotonic()
        op = asyncio.run(open_loop(port, open_tokens, args.duration, args.think_s, args.pool))
        results["open_loop"] = summary(op, time.monotonic() - t)
        results["open_loop"]["server_cpu_ms_per_cycle"] = cpu.per_cycle_ms(c0, cpu.sample(), op.cycles)
        log(f"open loop: {results['open_loop']}")
    finally:
        os.killpg(gunicorn.pid, signal.SIGTERM)
        gunicorn.wait(30)

    accepted = sum(x.accepted for x in (warm, s, sat, op))
    with connection.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT (group_id, annotator_id)), count(DISTINCT assignment_id) FROM annotation_judgment")
        total, distinct_pairs, distinct_assignments = cur.fetchone()
        cur.execute("SELECT count(*) FROM annotation_candidategroup WHERE judgments_count > target_judgments")
        overfull = cur.fetchone()[0]
    added = total - judgments_before
    lost_or_duplicated = abs(added - accepted) + (total - distinct_pairs) + (total - distinct_assignments) + overfull
    final = {
        "groups": args.groups, "candidates_per_group": args.candidates, "judgments_seeded": seed_info["history_judgments"],
        "duration_s": args.duration,
        "single_p50_ms": max(results["single"]["next_ms"][50], results["single"]["submit_ms"][50]),
        "single_p95_ms": max(results["single"]["next_ms"][95], results["single"]["submit_ms"][95]),
        "single_p99_ms": max(results["single"]["next_ms"][99], results["single"]["submit_ms"][99]),
        "saturation_users": args.users,
        "saturation_cycles_per_s": results["saturation"]["cycles_per_s"],
        "saturation_p95_ms": results["saturation"]["all_ms"][95],
        "open_loop_users": len(open_tokens),
        "open_loop_cycles_per_s": results["open_loop"]["cycles_per_s"],
        "open_loop_p95_ms": results["open_loop"]["all_ms"][95],
        "queries_per_request": qpr,
        # server CPU (gunicorn app + PostgreSQL backends) per cycle: comparable across runs on a shared machine
        "server_cpu_ms_per_cycle": {k: r["server_cpu_ms_per_cycle"] for k, r in results.items()},
        "load_average_1m": round(os.getloadavg()[0], 2),
        "accepted_submits": accepted, "judgments_added": added,
        "errors": {k: v for r in results.values() for k, v in r["errors"].items()},
        "lost_or_duplicated": lost_or_duplicated,
        "workers": args.workers, "threads": args.threads, "cpus": os.cpu_count(),
    }
    print(f"queries_per_request {json.dumps(qpr)}")
    print(f"lost_or_duplicated {lost_or_duplicated}")
    print(json.dumps(final))


if __name__ == "__main__":
    main()
