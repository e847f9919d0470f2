"""Prompt imports too big for one request (over ``settings.PROMPT_IMPORT_ASYNC_BYTES``): a background job.

The upload is stored first (``imports/<sha256>/upload.<fmt>``, the project's storage), then the worker (queue
``default``) streams it line by line: every row gets the same checks and line-numbered report as the synchronous
import (:mod:`annotation.services.prompts`). Memory stays bounded: rows go to the database in batches
(COPY), duplicates inside the file are found through a temporary table, and at most
``REPORT_MAX_REJECTED`` rejected rows are kept (with the total count). All or nothing: the whole run is one
transaction, rolled back when a row is rejected (or for a dry run); progress is written through a second connection,
so the page sees it while the transaction is open. A repeated upload of the same file (content hash, same options)
is recognised: it gets the earlier job instead of a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from typing import IO

from django.conf import settings
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from annotation import storage
from annotation.conf import videodpo
from annotation.errors import ApplicationError
from annotation.models import Prompt, PromptImport, PromptSet
from annotation.services import dispatch
from annotation.services.prompts import (
    ERR_DUPLICATE_IN_FILE,
    ERR_NOT_UTF8,
    ERR_NUL,
    ERR_UNKNOWN_FORMAT,
    ImportRow,
    categories_by_key,
    import_size_check,
    row_prompt,
    row_validate,
    rows_parse,
)

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "txt")
BATCH_ROWS = 2000
REPORT_MAX_REJECTED = 1000
PROGRESS_EVERY_S = 0.5
ERR_CONCURRENT = "another import added some of the same prompts meanwhile: nothing imported, run this file again"


class _Stop(Exception):
    """The file cannot be read on (not UTF-8): the report already holds the error."""


def import_is_big(size: int) -> bool:
    """An upload of ``size`` bytes runs as a background job (the threshold ``VIDEODPO_IMPORT_ASYNC_BYTES``)."""
    return size > settings.PROMPT_IMPORT_ASYNC_BYTES


def _options(*, default_category: str, prompt_set: PromptSet | None, held_out: bool, default_tags: list[str] | None,
             dry_run: bool) -> dict:
    return {"category": default_category or "", "prompt_set_id": prompt_set.pk if prompt_set else None,
            "held_out": bool(held_out), "tags": sorted(set(default_tags or [])), "dry_run": bool(dry_run)}


def prompt_import_start(*, file: IO[bytes], filename: str, size: int, fmt: str, actor=None, default_category: str = "",
                        prompt_set: PromptSet | None = None, held_out: bool = False,
                        default_tags: list[str] | None = None, dry_run: bool = False) -> tuple[PromptImport, bool]:
    """Store the upload and queue its import; ``(job, repeated)``: ``repeated`` when the same file with the same options
    is already queued, running or imported (that job is returned, nothing is queued)."""
    import_size_check(size)
    fmt = (fmt or "").lower()
    if fmt not in FORMATS:
        raise ApplicationError(ERR_UNKNOWN_FORMAT.format(value=fmt))
    digest = hashlib.sha256()
    file.seek(0)
    for chunk in iter(lambda: file.read(1 << 20), b""):
        digest.update(chunk)
    content_hash = digest.hexdigest()
    options = _options(default_category=default_category, prompt_set=prompt_set, held_out=held_out,
                       default_tags=default_tags, dry_run=dry_run)
    earlier = (PromptImport.objects.filter(content_hash=content_hash, options=options,
                                           status__in=[PromptImport.Status.QUEUED, PromptImport.Status.RUNNING,
                                                       PromptImport.Status.DONE])
               .order_by("-created_at").first())
    if earlier is not None and not dry_run:
        return earlier, True
    key = f"imports/{content_hash}/upload.{fmt}"
    file.seek(0)
    storage.object_save(key=key, data=file, content_type="text/plain")
    with transaction.atomic():
        job = PromptImport.objects.create(filename=filename[:255], format=fmt, size_bytes=size,
                                          content_hash=content_hash, upload_key=key, options=options, created_by=actor)
        dispatch.prompt_import_dispatch_on_commit(import_id=job.pk)
    return job, False


def prompt_import_start_items(*, items: list[dict], actor=None, prompt_set: PromptSet | None = None
                              ) -> tuple[PromptImport, bool]:
    """The bulk API's list of prompt objects as a JSONL job (item n is line n of the report)."""
    import tempfile

    with tempfile.TemporaryFile() as fh:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False).encode() + b"\n")
        size = fh.tell()
        return prompt_import_start(file=fh, filename="api.jsonl", size=size, fmt="jsonl", actor=actor,
                                   prompt_set=prompt_set)


# -- the worker's side -------------------------------------------------------------------------------------------------
def _lines(fh: IO[bytes], report: dict, on_bytes) -> Iterator[str]:
    """The file's lines decoded one by one (UTF-8, a leading BOM dropped); a NUL is reported on its line."""
    number = 0
    for raw in fh:
        number += 1
        on_bytes(len(raw), number)
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            _parse_error(report, number, ERR_NOT_UTF8)
            raise _Stop from None
        if "\x00" in line:
            _reject(report, number, ERR_NUL)
            line = line.replace("\x00", "")
        yield line


def _rows(lines: Iterable[str], fmt: str, report: dict) -> Iterator[ImportRow]:
    return rows_parse(lines, fmt, on_error=lambda line, error: _parse_error(report, line, error))


def _parse_error(report: dict, line: int, error: str) -> None:
    """A line that gives no row (counted in ``total``, like the synchronous import)."""
    report["total"] += 1
    _reject(report, line, error)


def _reject(report: dict, line: int, error: str) -> None:
    report["rejected_count"] += 1
    if len(report["rejected"]) < REPORT_MAX_REJECTED:
        report["rejected"].append({"line": line, "error": error})


class _Progress:
    """Writes the job's progress through its own connection (visible while the import's transaction is open)."""

    def __init__(self, job: PromptImport):
        self.job_id, self.size = job.pk, max(job.size_bytes, 1)
        self.read, self.lines, self.last = 0, 0, 0.0
        self.conn = connections.create_connection("default")

    def __call__(self, n: int, line: int) -> None:
        import time

        self.read += n
        self.lines = line
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self.write()

    def write(self) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute(f"UPDATE {PromptImport._meta.db_table} SET progress = %s, lines_done = %s WHERE id = %s",
                           [min(self.read / self.size, 0.99), self.lines, self.job_id])

    def close(self) -> None:
        self.conn.close()


class _Rollback(Exception):
    pass


def prompt_import_run(*, import_id: int) -> PromptImport:
    """Run one import job (idempotent: a finished job returns at once; an interrupted one runs again from the start,
    its earlier transaction having rolled back)."""
    job = PromptImport.objects.get(pk=import_id)
    if job.status in (PromptImport.Status.DONE, PromptImport.Status.REJECTED, PromptImport.Status.FAILED):
        return job
    PromptImport.objects.filter(pk=job.pk).update(status=PromptImport.Status.RUNNING, progress=0.0, lines_done=0)
    options = job.options or {}
    report = {"total": 0, "created": 0, "duplicates": 0, "would_create": 0, "rejected": [], "rejected_count": 0,
              "dry_run": bool(options.get("dry_run"))}
    progress = _Progress(job)
    status, error = PromptImport.Status.DONE, ""
    try:
        with transaction.atomic():
            _import_rows(job, options, report, progress)
            if report["rejected_count"] or report["dry_run"]:
                raise _Rollback
    except _Rollback:
        status = PromptImport.Status.REJECTED if report["rejected_count"] else PromptImport.Status.DONE
    except IntegrityError:
        status, error = PromptImport.Status.FAILED, ERR_CONCURRENT
        report["created"] = 0
    except Exception as exc:  # a storage or database failure: the job says so (and nothing was imported)
        log.exception("prompt import %s failed", job.pk)
        status, error = PromptImport.Status.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
        report["created"] = 0
    finally:
        progress.close()
    if status != PromptImport.Status.DONE or report["dry_run"]:
        report["created"] = 0
    report["rejected"].sort(key=lambda r: r["line"])
    report["ok"] = not report["rejected_count"]
    PromptImport.objects.filter(pk=job.pk).update(status=status, report=report, error=error, progress=1.0,
                                                  lines_done=progress.lines, finished_at=timezone.now())
    job.refresh_from_db()
    return job


def _import_rows(job: PromptImport, options: dict, report: dict, progress: _Progress) -> None:
    """Inside the import's transaction: parse, check and insert batch by batch."""
    categories = categories_by_key()
    max_chars = videodpo().max_prompt_chars
    default_category = options.get("category") or ""
    prompt_set = PromptSet.objects.filter(pk=options.get("prompt_set_id")).first() if options.get("prompt_set_id") else None
    with connection.cursor() as cursor:  # the file's text hashes so far (dropped with the transaction)
        cursor.execute("DROP TABLE IF EXISTS prompt_import_seen")  # when called inside an outer transaction
        cursor.execute("CREATE TEMPORARY TABLE prompt_import_seen (digest char(64) PRIMARY KEY, line bigint NOT NULL)"
                       " ON COMMIT DROP")
    batch: list[tuple[ImportRow, str]] = []

    def flush() -> None:
        if not batch:
            return
        in_file = _first_lines([(digest, row.line) for row, digest in batch])
        fresh: list[tuple[ImportRow, str]] = []
        for row, digest in batch:
            first = in_file.get(digest)
            if first is not None and first != row.line:
                _reject(report, row.line, ERR_DUPLICATE_IN_FILE.format(line=first))
            else:
                fresh.append((row, digest))
        existing = set(Prompt.objects.filter(text_hash__in=[d for _, d in fresh]).values_list("text_hash", flat=True))
        new = [row_prompt(row, digest, categories=categories, default_category=default_category,
                          prompt_set=prompt_set, default_tags=options.get("tags") or [],
                          held_out=bool(options.get("held_out")))
               for row, digest in fresh if digest not in existing]
        report["duplicates"] += len(fresh) - len(new)
        if report["dry_run"]:
            report["would_create"] += len(new)
        elif not report["rejected_count"]:  # once a row is rejected nothing will be committed: only check the rest
            _copy_prompts(new)
            report["created"] += len(new)
        batch.clear()

    try:
        with storage.object_open(key=job.upload_key) as fh:
            for row in _rows(_lines(fh, report, progress), job.format, report):
                report["total"] += 1
                error, digest = row_validate(row, categories=categories, default_category=default_category,
                                             max_chars=max_chars)
                if error:
                    _reject(report, row.line, error)
                    continue
                batch.append((row, digest))
                if len(batch) >= BATCH_ROWS:
                    flush()
    except _Stop:
        pass
    flush()
    progress.write()


def _copy_prompts(prompts: list[Prompt]) -> None:
    """Insert with COPY (what ``bulk_create`` does, without building an INSERT of thousands of parameters: the
    model's own field conversions, ``auto_now`` timestamps included)."""
    if not prompts:
        return
    fields = [f for f in Prompt._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {connection.ops.quote_name(Prompt._meta.db_table)} ({columns}) FROM STDIN") as copy:
            for prompt in prompts:
                copy.write_row([f.get_db_prep_save(f.pre_save(prompt, True), connection) for f in fields])


def _first_lines(pairs: list[tuple[str, int]]) -> dict[str, int]:
    """Record the batch's hashes; for each, the first line in the file that had it."""
    first: dict[str, int] = {}
    for digest, line in pairs:
        first.setdefault(digest, line)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO prompt_import_seen (digest, line) SELECT * FROM unnest(%s::char(64)[], %s::bigint[]) "
            "ON CONFLICT (digest) DO NOTHING", [list(first), list(first.values())])
        cursor.execute("SELECT digest, line FROM prompt_import_seen WHERE digest = ANY(%s::char(64)[])",
                       [list(first)])
        return dict(cursor.fetchall())
