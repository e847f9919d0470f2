"""The prompt pool: create, import (CSV / JSONL / TXT), dedupe on normalized text, activate/retire.

An import is all-or-nothing: every row is validated first and a report with line numbers is returned; rows are
written in one transaction only when ``dry_run`` is false and no row was rejected (unless ``skip_invalid``)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from annotation.conf import videodpo
from annotation.errors import ApplicationError
from annotation.models import Category, Prompt, PromptSet

ERR_EMPTY = "empty prompt text"
ERR_TOO_LONG = "prompt longer than {max} characters ({n})"
ERR_UNKNOWN_CATEGORY = "unknown category {value!r}"
ERR_UNKNOWN_SOURCE = "unknown source {value!r} (expected training_caption or hand_written)"
ERR_UNKNOWN_LANGUAGE = "unknown language {value!r} (expected en, zh or mixed)"
ERR_BAD_JSON = "not a JSON object: {error}"
ERR_NOT_UTF8 = "the file is not UTF-8 text"
ERR_UNKNOWN_FORMAT = "unknown import format {value!r} (expected csv, jsonl or txt)"
ERR_NO_TEXT_COLUMN = "CSV header has no 'text' (or 'prompt') column"
ERR_NUL = "the file contains a NUL character"
ERR_IMPORT_TOO_LARGE = ("The file is {size:.1f} MB; one import takes at most {limit:.1f} MB (VIDEODPO_IMPORT_MAX_BYTES). "
                        "Split it into smaller files.")


class ImportTooLarge(ApplicationError):
    """An import over ``settings.PROMPT_IMPORT_MAX_BYTES`` (413)."""

    status = 413


def import_size_check(size: int) -> None:
    """Refuse (413, with the limit) an import file of ``size`` bytes over the configured limit."""
    limit = settings.PROMPT_IMPORT_MAX_BYTES
    if size > limit:
        raise ImportTooLarge(ERR_IMPORT_TOO_LARGE.format(size=size / 1e6, limit=limit / 1e6))
ERR_BAD_CSV = "unreadable CSV: {error}"
ERR_DUPLICATE_IN_FILE = "duplicate of line {line} in this file"

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN = re.compile(r"[A-Za-z]")


def prompt_normalize(text: str) -> str:
    """NFKC, casefold, collapsed whitespace: two prompts that normalize alike are duplicates."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def prompt_hash(text: str) -> str:
    return hashlib.sha256(prompt_normalize(text).encode("utf-8")).hexdigest()


def prompt_language(text: str) -> str:
    has_cjk, has_latin = bool(CJK.search(text)), bool(LATIN.search(text))
    if has_cjk and has_latin:
        return Prompt.Language.MIXED
    return Prompt.Language.ZH if has_cjk else Prompt.Language.EN


@dataclass
class ImportRow:
    line: int
    text: str
    category: str = ""
    source: str = Prompt.Source.HAND_WRITTEN
    language: str = ""
    tags: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    total: int = 0
    created: int = 0
    duplicates: int = 0  # already in the pool (skipped, not an error)
    would_create: int = 0  # a dry run: the new prompts an import would create
    dry_run: bool = False
    rejected: list[dict] = field(default_factory=list)  # {"line": n, "error": "..."}
    created_ids: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def as_dict(self) -> dict:
        return {"total": self.total, "created": self.created, "duplicates": self.duplicates,
                "rejected": self.rejected, "ok": self.ok}


def _rows_from_file(data: bytes, fmt: str) -> tuple[list[ImportRow], list[dict]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [{"line": text_line_of_offset(data, exc.start), "error": ERR_NOT_UTF8}]
    if "\x00" in text:  # PostgreSQL text cannot hold NUL
        return [], [{"line": text.count("\n", 0, text.index("\x00")) + 1, "error": ERR_NUL}]
    errors: list[dict] = []
    rows = list(rows_parse(text.splitlines(keepends=True), fmt,
                           on_error=lambda line, error: errors.append({"line": line, "error": error})))
    return rows, errors


def rows_parse(lines: Iterable[str], fmt: str, *, on_error: Callable[[int, str], None]) -> Iterator[ImportRow]:
    """The rows of an import file given as decoded lines (line endings kept, so quoted CSV fields may span lines);
    a line that gives no row is reported through ``on_error(line_number, message)``. One parser for the synchronous
    import and the background job (:mod:`annotation.services.prompt_imports`), so both report the same lines."""
    if fmt == "txt":
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield ImportRow(line=number, text=line.strip())
    elif fmt == "jsonl":
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("expected an object")
            except ValueError as exc:
                on_error(number, ERR_BAD_JSON.format(error=exc))
                continue
            yield _row_from_mapping(number, obj)
    elif fmt == "csv":
        reader = csv.DictReader(lines)
        try:
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "text" not in fields and "prompt" not in fields:
                on_error(1, ERR_NO_TEXT_COLUMN)
                return
            for record in reader:
                obj = {(k or "").strip().lower(): (v or "") for k, v in record.items()}
                yield _row_from_mapping(reader.line_num, obj)
        except csv.Error as exc:  # e.g. a field over the csv module's 131,072-character limit
            on_error(reader.line_num, ERR_BAD_CSV.format(error=exc))
    else:
        raise ValueError(ERR_UNKNOWN_FORMAT.format(value=fmt))


def text_line_of_offset(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


def _row_from_mapping(number: int, obj: dict) -> ImportRow:
    tags = obj.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in re.split(r"[;,|]", tags) if t.strip()]
    return ImportRow(
        line=number,
        text=str(obj.get("text") or obj.get("prompt") or "").strip(),
        category=str(obj.get("category") or "").strip(),
        source=str(obj.get("source") or Prompt.Source.HAND_WRITTEN).strip(),
        language=str(obj.get("language") or "").strip(),
        tags=[str(t)[:64] for t in tags],
    )


def _categories() -> dict[str, Category]:
    by_key: dict[str, Category] = {}
    for category in Category.objects.all():
        by_key[category.slug] = category
        by_key[category.name.casefold()] = category
    return by_key


def row_validate(row: ImportRow, *, categories: dict[str, Category], default_category: str,
                 max_chars: int) -> tuple[str | None, str]:
    """``(error or None, text hash)`` of one parsed row (the checks of every import, synchronous or a job)."""
    error = None
    category_key = (row.category or default_category).strip()
    if not row.text:
        error = ERR_EMPTY
    elif "\x00" in row.text or any("\x00" in t for t in row.tags) or "\x00" in (row.category or ""):
        error = ERR_NUL  # PostgreSQL text cannot hold NUL (a JSON "\u0000" decodes to one)
    elif len(row.text) > max_chars:
        error = ERR_TOO_LONG.format(max=max_chars, n=len(row.text))
    elif category_key and category_key.casefold() not in categories and category_key not in categories:
        error = ERR_UNKNOWN_CATEGORY.format(value=category_key)
    elif row.source not in Prompt.Source.values:
        error = ERR_UNKNOWN_SOURCE.format(value=row.source)
    elif row.language and row.language not in Prompt.Language.values:
        error = ERR_UNKNOWN_LANGUAGE.format(value=row.language)
    return error, (prompt_hash(row.text) if row.text else "")


def row_prompt(row: ImportRow, digest: str, *, categories: dict[str, Category], default_category: str,
               prompt_set: PromptSet | None, default_tags: list[str] | None, held_out: bool) -> Prompt:
    """The unsaved Prompt of one valid row."""
    category_key = (row.category or default_category).strip()
    category = categories.get(category_key) or categories.get(category_key.casefold()) if category_key else None
    return Prompt(text=row.text, text_hash=digest, language=row.language or prompt_language(row.text), category=category,
                  prompt_set=prompt_set, source=row.source, tags=sorted(set(row.tags + list(default_tags or []))),
                  is_held_out=held_out)


def categories_by_key() -> dict[str, Category]:
    """Categories by slug and by casefolded name (what an import row's ``category`` may name)."""
    return _categories()


@transaction.atomic
def prompts_import(*, data: bytes, fmt: str, prompt_set: PromptSet | None = None, dry_run: bool = False,
                   skip_invalid: bool = False, default_category: str = "", default_tags: list[str] | None = None,
                   held_out: bool = False) -> ImportReport:
    """Validate every row, then create the new prompts in one transaction (nothing when a row is rejected).
    Raises ``ImportTooLarge`` for data over ``settings.PROMPT_IMPORT_MAX_BYTES``."""
    import_size_check(len(data))
    rows, errors = _rows_from_file(data, fmt.lower())
    report = ImportReport(total=len(rows) + len(errors), rejected=list(errors))
    categories = _categories()
    max_chars = videodpo().max_prompt_chars
    seen: dict[str, int] = {}
    valid: list[tuple[ImportRow, str]] = []
    for row in rows:
        error, digest = row_validate(row, categories=categories, default_category=default_category, max_chars=max_chars)
        if error is None and digest in seen:
            error = ERR_DUPLICATE_IN_FILE.format(line=seen[digest])
        if error:
            report.rejected.append({"line": row.line, "error": error})
            continue
        seen[digest] = row.line
        valid.append((row, digest))
    report.rejected.sort(key=lambda r: r["line"])
    existing = set(Prompt.objects.filter(text_hash__in=[d for _, d in valid]).values_list("text_hash", flat=True))
    if dry_run:  # what an import would do: new prompts and those already in the pool
        report.dry_run = True
        report.duplicates = sum(1 for _, digest in valid if digest in existing)
        report.would_create = len(valid) - report.duplicates
    if (report.rejected and not skip_invalid) or dry_run:
        return report
    new = []
    for row, digest in valid:
        if digest in existing:
            report.duplicates += 1
            continue
        new.append(row_prompt(row, digest, categories=categories, default_category=default_category,
                              prompt_set=prompt_set, default_tags=default_tags, held_out=held_out))
    created = Prompt.objects.bulk_create(new, batch_size=2000)
    report.created = len(created)
    report.created_ids = [p.pk for p in created]
    return report


def prompt_create(*, text: str, category: Category | None = None, source: str = Prompt.Source.HAND_WRITTEN,
                  tags: list[str] | None = None, prompt_set: PromptSet | None = None, language: str = "") -> Prompt:
    """Create one prompt (full_clean first); a duplicate of an existing prompt raises a ValidationError."""
    from django.core.exceptions import ValidationError

    text = (text or "").strip()
    if not text:
        raise ValidationError({"text": ERR_EMPTY})
    max_chars = videodpo().max_prompt_chars
    if len(text) > max_chars:
        raise ValidationError({"text": ERR_TOO_LONG.format(max=max_chars, n=len(text))})
    prompt = Prompt(text=text, text_hash=prompt_hash(text), language=language or prompt_language(text), category=category,
                    source=source, tags=tags or [], prompt_set=prompt_set)
    prompt.full_clean()
    prompt.save()
    return prompt


def prompts_set_active(*, prompt_ids: list[int], active: bool) -> int:
    return Prompt.objects.filter(id__in=prompt_ids).update(is_active=active)
