"""Export benchmark: bulk-seed N preference pairs (COPY) and time every export format in its own process.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/x python benchmarks/export.py [--pairs 1000000]
        [--formats trl_parquet,manifest,...] [--db export_bench] [--chunk-size 20000] [--reseed]

Seeding: a database ``--db`` on the server of DATABASE_URL (created and migrated when missing; reused when it already
holds exactly ``--pairs`` pairs), P prompts x R rounds groups of K = 4 candidates (two checkpoints alternate rounds),
all 6 pairs of each group, written with COPY. No judgments are seeded (datasheet annotator counts are 0 and
Pick-a-Pic ``user_id`` is empty; the per-chunk voter query still runs).

Each export runs as ``manage.py export_preferences`` in a child process; wall time and the child's peak RSS come from
``os.wait4`` (the rusage of that one child). Prints a table and, last, one JSON line with ``<name>_s``,
``<name>_cpu_s`` (the exporter's own CPU time: a figure that holds on a shared machine), ``<name>_peak_rss_mb``,
``<name>_mb`` per format (trl_parquet is reported as ``parquet``, trl as ``jsonl``).
Target: 1M pairs to Parquet in < 60 s and < 500 MB peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
ALL_FORMATS = ["trl_parquet", "manifest", "trl", "pickapic", "videoalign", "videodpo", "hf_datasets"]
NAMES = {"trl_parquet": "parquet", "trl": "jsonl"}
K = 4
PAIRS_PER_GROUP = K * (K - 1) // 2


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def ensure_database(url: str, name: str, reseed: bool) -> None:
    import psycopg

    with psycopg.connect(with_db(url, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and reseed:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def django_setup(db_url: str) -> None:
    os.environ["DATABASE_URL"] = db_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings.test"
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def seed(n_pairs: int) -> dict:
    """COPY prompts, groups, candidates and pairs; returns counts. Idempotent per size."""
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from annotation.models import Checkpoint, PreferencePair, Round

    have = PreferencePair.objects.count()
    if have == n_pairs:
        return {"seeded": False, "pairs": have}
    if have:
        raise SystemExit(f"database holds {have} pairs, not {n_pairs}: rerun with --reseed")
    n_groups = -(-n_pairs // PAIRS_PER_GROUP)
    n_prompts = min(n_groups, 20_000)
    n_rounds = -(-n_groups // n_prompts)
    ck = [Checkpoint.objects.create(name=f"bench-ckpt-{i}", uri=f"s3://bench/checkpoints/{i}/") for i in range(2)]
    rounds = [
        Round.objects.create(name=f"bench-round-{r}", policy_checkpoint=ck[r % 2], num_steps=50, cfg_scale=9.0,
                             shift=13.0, height=544, width=992, num_frames=204, status=Round.Status.DONE)
        for r in range(n_rounds)
    ]
    now = "2026-01-01 00:00:00+00"
    t0 = time.monotonic()
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg 3 cursor: COPY support
        base = raw.execute("SELECT coalesce(max(id), 0) FROM annotation_prompt").fetchone()[0]
        with raw.copy("COPY annotation_prompt (id, created_at, updated_at, text, text_hash, language, source, tags, "
                      "is_active, is_held_out) FROM STDIN") as copy:
            for i in range(n_prompts):
                pid = base + 1 + i
                copy.write_row((pid, now, now, f"bench prompt {i}: a corgi surfing a wave at sunset, shot {i % 97}",
                                f"{pid:064x}", "en", "hand_written", "{}", True, False))
        g_base = raw.execute("SELECT coalesce(max(id), 0) FROM annotation_candidategroup").fetchone()[0]
        c_base = raw.execute("SELECT coalesce(max(id), 0) FROM annotation_candidate").fetchone()[0]
        with raw.copy("COPY annotation_candidategroup (id, created_at, updated_at, round_id, prompt_id, status, "
                      "is_gold, gold_answer, target_judgments, active_reservations, judgments_count) FROM STDIN") as copy:
            for g in range(n_groups):
                rnd = rounds[g // n_prompts]
                gid = g_base + 1 + g
                copy.write_row((gid, now, now, rnd.pk, base + 1 + g % n_prompts, "done", False, "{}", 3, 0, 3))
        with raw.copy("COPY annotation_candidate (id, created_at, updated_at, group_id, checkpoint_id, seed, status, "
                      "progress_step, progress_total, video_uri, poster_uri, sprite_uri, latent_uri, "
                      "text_embedding_uri, duration_s, num_frames, fps, screening_flags, screening_metrics, "
                      "prompt_truncated, error, attempts) FROM STDIN") as copy:
            for g in range(n_groups):
                gid, rnd, pid = g_base + 1 + g, rounds[g // n_prompts], base + 1 + g % n_prompts
                for s in range(K):
                    cid = c_base + 1 + g * K + s
                    key = f"s3://bench/rounds/{rnd.pk}/groups/{gid}/candidates/{cid}"
                    copy.write_row((cid, now, now, gid, rnd.policy_checkpoint_id, s, "ready", 50, 50,
                                    f"{key}/video.mp4", f"{key}/poster.jpg", "", f"{key}/latent.safetensors",
                                    f"s3://bench/prompts/{pid}/text-embeddings/step-llm-v1.safetensors",
                                    8.16, 204, 25.0, "{}", "{}", False, "", 1))
        p_base = raw.execute("SELECT coalesce(max(id), 0) FROM annotation_preferencepair").fetchone()[0]
        with raw.copy("COPY annotation_preferencepair (id, created_at, updated_at, round_id, group_id, chosen_id, "
                      "rejected_id, weight, agreement, votes_for, votes_against, n_annotators, source) FROM STDIN") as copy:
            n = 0
            for g in range(n_groups):
                gid, rnd = g_base + 1 + g, rounds[g // n_prompts]
                for a in range(K):
                    for b in range(a + 1, K):
                        if n == n_pairs:
                            break
                        n += 1
                        votes = 2 + (n % 2)
                        copy.write_row((p_base + n, now, now, rnd.pk, gid, c_base + 1 + g * K + a,
                                        c_base + 1 + g * K + b, votes / 3, votes / 3, votes, 3 - votes, 3, "human"))
        for table in ("annotation_prompt", "annotation_candidategroup", "annotation_candidate",
                      "annotation_preferencepair"):
            raw.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            raw.execute(f"ANALYZE {table}")
    return {"seeded": True, "pairs": n_pairs, "groups": n_groups, "candidates": n_groups * K,
            "prompts": n_prompts, "rounds": n_rounds, "seed_s": round(time.monotonic() - t0, 1)}


WRAPPER = r"""
import json, os, subprocess, sys, time
t0 = time.monotonic()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
out, err = b"", b""
import threading
def drain(stream, buf):
    buf.append(stream.read())
o, e = [], []
threads = [threading.Thread(target=drain, args=(proc.stdout, o)), threading.Thread(target=drain, args=(proc.stderr, e))]
[t.start() for t in threads]
_, status, usage = os.wait4(proc.pid, 0)
[t.join() for t in threads]
print(json.dumps({"wall_s": time.monotonic() - t0, "status": os.waitstatus_to_exitcode(status),
                  "maxrss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime, "stdout": o[0].decode()[-2000:], "stderr": e[0].decode()[-3000:]}))
"""


def measure(fmt: str, db_url: str, out_dir: Path, chunk_size: int) -> dict:
    env = dict(os.environ, DATABASE_URL=db_url, DJANGO_SETTINGS_MODULE="webapp.settings.test",
               STORAGE_BACKEND="local", DJANGO_MEDIA_ROOT=str(out_dir / "media"), VIDEODPO_TEST_TMP=str(out_dir))
    out = out_dir / f"out-{fmt}" / ("export.zip" if fmt in ("videodpo", "hf_datasets") else f"export-{fmt}")
    cmd = [sys.executable, "-c", WRAPPER, sys.executable, str(REPO / "manage.py"), "export_preferences",
           "--format", fmt, "--out", str(out), "--chunk-size", str(chunk_size)]
    res = json.loads(subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, check=True).stdout)
    if res["status"] != 0:
        raise SystemExit(f"{fmt} failed:\n{res['stderr']}")
    summary = json.loads(res["stdout"].strip().splitlines()[-1])
    size = out.stat().st_size
    out.unlink()
    return {"wall_s": res["wall_s"], "cpu_s": res["cpu_s"], "peak_rss_mb": res["maxrss_kb"] / 1024, "rows": summary["rows"],
            "mb": size / 1e6, "sha256": summary["sha256"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--formats", default=",".join(ALL_FORMATS))
    parser.add_argument("--db", default="export_bench")
    parser.add_argument("--chunk-size", type=int, default=20_000)
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL to a PostgreSQL server (the benchmark creates its own database on it)")
    db_url = with_db(url, args.db)
    ensure_database(url, args.db, args.reseed)
    django_setup(db_url)
    t0 = time.monotonic()
    info = seed(args.pairs)
    result = {"pairs": args.pairs, "seed_s": round(time.monotonic() - t0, 1), "seeded_now": info["seeded"],
              "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count()}
    print(f"seed: {info}", flush=True)
    from django.db import connections

    connections.close_all()
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        for fmt in [f for f in args.formats.split(",") if f]:
            m = measure(fmt, db_url, Path(tmp), args.chunk_size)
            name = NAMES.get(fmt, fmt)
            print(f"{fmt:<12} rows {m['rows']:>9}  {m['wall_s']:7.1f} s (cpu {m['cpu_s']:6.1f} s)  peak RSS {m['peak_rss_mb']:7.1f} MB  "
                  f"{m['mb']:8.1f} MB  sha256 {m['sha256'][:12]}", flush=True)
            result.update({f"{name}_s": round(m["wall_s"], 2), f"{name}_cpu_s": round(m["cpu_s"], 2),
                           f"{name}_peak_rss_mb": round(m["peak_rss_mb"], 1),
                           f"{name}_mb": round(m["mb"], 1), f"{name}_rows": m["rows"]})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
