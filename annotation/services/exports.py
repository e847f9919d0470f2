"""Exports: create (validate, version, enqueue on commit) and run (stream, hash, upload, datasheet).

``export_create`` refuses an empty result before anything is written or queued; ``export_run`` is what the Celery
task and the management command call. A run is idempotent: a finished export returns at once, an interrupted one
(worker killed, ``acks_late`` redelivery) starts again from scratch and overwrites its deterministic keys."""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
import time
from pathlib import Path

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from annotation import storage
from annotation.errors import ApplicationError
from annotation.exports.filters import ExportFilter, ExportFilterError, filter_parse
from annotation.exports.formats import (
    FORMATS,
    HF_SCHEMA,
    MANIFEST_SCHEMA,
    PICKAPIC_SCHEMA,
    RAW_FIELDS,
    TRL_SCHEMA,
    VIDEOALIGN_HEADER,
    WriteContext,
    artifact_name,
    artifact_write,
)
from annotation.exports.media import MEDIA_DIR, MediaResolver
from annotation.models import Export
from annotation.selectors.exports import (
    Pseudonyms,
    export_queryset,
    judgment_chunks,
    judgment_datasheet_stats,
    pair_chunks,
    pair_datasheet_stats,
    snapshot,
)
from annotation.services import dispatch
from annotation.services.accounts import pseudonym_for

logger = logging.getLogger(__name__)

ERR_UNKNOWN_FORMAT = "Unknown export format {format!r}: expected one of " + ", ".join(Export.Format.values) + "."
ERR_EMPTY = "Nothing to export: no {what} match this filter ({filter}). Widen the filter; no export was created."
ERR_VERSION_RACE = "Could not allocate a version number for this export; try again."

DEFAULT_CHUNK_SIZE = 20_000
PROGRESS_MIN_INTERVAL_S = 0.5
HF_ROWS_PER_SHARD = 500_000  # Hugging Face's own uploads aim at ~500 MB shards; pairs are ~300 B each compressed

COLUMNS = {
    Export.Format.TRL: TRL_SCHEMA.names,
    Export.Format.TRL_PARQUET: TRL_SCHEMA.names,
    Export.Format.PICKAPIC: PICKAPIC_SCHEMA.names,
    Export.Format.VIDEOALIGN: VIDEOALIGN_HEADER,
    Export.Format.VIDEODPO: {
        "metadata.json": ["basic.clip_id", "basic.clip_path", "basic.clip_duration", "misc.frame_caption"],
        "pair.json": ["video1", "video2", "frame_caption", "score"],
    },
    Export.Format.HF_DATASETS: HF_SCHEMA.names,
    Export.Format.RAW: RAW_FIELDS,
    Export.Format.MANIFEST: MANIFEST_SCHEMA.names,
}
NOTES = {
    Export.Format.TRL: "chosen/rejected are video URIs; round is the round id; checkpoint is the round's policy.",
    Export.Format.PICKAPIC: "Winner in column 0 for even pair ids, 1 for odd ones; user_id lists the pseudonyms of "
    "the annotators whose judgments imply the pair; ranking_id is the candidate group. Ties are not pairs, so "
    "labels are 1/0.",
    Export.Format.VIDEOALIGN: "VQ, MQ and TA are the annotators' per-aspect majority (A, B or same) for the pairs of "
    "rounds with per-aspect judgments (pairs_with_aspects); the other pairs carry their one overall preference in all "
    "three. A/B order alternates with the pair id.",
    Export.Format.VIDEODPO: "score is the pair weight (net vote margin over annotators).",
    Export.Format.RAW: "One row per judgment and candidate (a skip without labels: one row with empty candidate "
    "fields). annotator is a stable pseudonym.",
    Export.Format.MANIFEST: "Columns of docs/contracts.md; pairs without both latents or the text embedding are "
    "left out (the trainer cannot use them). Every DPO run trains on one of these exports.",
}


class ExportError(ApplicationError, ValueError):
    """An export request the user must change (400); the message says what."""


def export_filter_validate(*, format: str, filter: dict | None) -> ExportFilter:
    """Parse the filter and check that it selects at least one row (raises ExportError otherwise)."""
    if format not in Export.Format.values:
        raise ExportError(ERR_UNKNOWN_FORMAT.format(format=format))
    try:
        flt = filter_parse(filter, format=format)
    except ExportFilterError as exc:
        raise ExportError(str(exc)) from exc
    if not export_queryset(flt=flt, format=format).exists():
        what = "judgments" if format == Export.Format.RAW else (
            "preference pairs with latents and text embeddings" if format == Export.Format.MANIFEST else "preference pairs"
        )
        raise ExportError(ERR_EMPTY.format(what=what, filter=flt.describe()))
    return flt


def export_create(*, format: str, filter: dict | None, actor, enqueue: bool = True) -> Export:
    """Validate, then create the next version of ``format`` and queue its run once the transaction commits.
    Nothing is created when the filter is bad or selects nothing."""
    flt = export_filter_validate(format=format, filter=filter)
    for _attempt in range(5):
        try:
            with transaction.atomic():
                version = (Export.objects.filter(format=format).aggregate(v=Max("version"))["v"] or 0) + 1
                export = Export(format=format, filter=flt.as_json(), version=version, status=Export.Status.QUEUED,
                                created_by=actor if getattr(actor, "pk", None) else None)
                export.full_clean()
                export.save()
                if enqueue:
                    dispatch.export_run_dispatch_on_commit(export_id=export.pk)
                return export
        except IntegrityError:  # a concurrent create took this version number
            continue
    raise ExportError(ERR_VERSION_RACE)


def export_artifact_key(*, export: Export) -> str:
    media = (export.filter or {}).get("media") or "none"
    return storage.export_key(export_id=export.pk, filename=artifact_name(format=export.format, media=media)[0])


def _media_card(datasheet: dict) -> str:
    media = datasheet["media"]
    if media["mode"] == "bundle":
        return (f"The videos are in `{MEDIA_DIR}/`: `chosen` and `rejected` are paths relative to this folder "
                "(`Path(folder) / row['chosen']`).")
    if media["mode"] == "links":
        return f"`chosen` and `rejected` are signed links that expire at {media['expires_at']}."
    return "`chosen` and `rejected` are the videos' URIs on the server that made the export."


def _progress_updater(export_id: int, total: int):
    last = [0.0]

    def update(rows: int) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_MIN_INTERVAL_S:
            return
        last[0] = now
        Export.objects.filter(pk=export_id).update(progress=min(rows / total, 0.99) if total else 0.0)

    return update


def _hf_card(export: Export, datasheet: dict) -> str:
    rounds = "\n".join(f"| {r['id']} | {r['name']} | {r.get('pairs', r.get('judgments'))} |" for r in datasheet["rounds"])
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
task_categories:
- text-to-video
tags:
- preference
- dpo
- video
---
# Video-DPO preference pairs (export {export.pk}, version {export.version})

Human preference pairs between generated videos of the same prompt, from the Video-DPO feedback loop.
Annotators appear only as stable pseudonyms.

- rows: {datasheet['rows']}
- filter: {datasheet['filter_description']}
- annotators: {datasheet['annotators']}
- mean agreement: {datasheet['agreement']['mean']}
- tie rate (all-good / all-bad answers): {datasheet['tie_rate']}

| round id | round | pairs |
|---|---|---|
{rounds}

{_media_card(datasheet)}

Load with `datasets.load_from_disk(<this folder>)["train"]`, `datasets.load_dataset(<this folder>)` or
`datasets.load_dataset("parquet", data_files="data/train-*.parquet")`.
"""


def export_run(*, export_id: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Export:
    """Write the export's artifact and datasheet to storage and mark it done (or failed, with the error)."""
    export = Export.objects.get(pk=export_id)
    if export.status == Export.Status.DONE:
        return export
    started = time.monotonic()
    Export.objects.filter(pk=export_id).update(status=Export.Status.RUNNING, progress=0.0, error="")
    try:
        flt = filter_parse(export.filter, format=export.format)
        spec = FORMATS[export.format]
        qs, total = snapshot(export_queryset(flt=flt, format=export.format))
        if spec.rows == "judgments":
            stats = judgment_datasheet_stats(qs=qs)
            chunks = judgment_chunks(qs, chunk_size=chunk_size)
        else:
            stats = pair_datasheet_stats(qs=qs)
            chunks = pair_chunks(qs, chunk_size=chunk_size, columns=spec.columns)
        media = MediaResolver(mode=flt.media or "none", ttl_s=flt.media_ttl_s or 0,
                              base_url=flt.media_base_url or "")
        expires_at = (timezone.now() + dt.timedelta(seconds=media.ttl_s)) if media.mode == "links" else None
        datasheet = {
            "export_id": export.pk,
            "format": export.format,
            "format_label": Export.Format(export.format).label,
            "version": export.version,
            "filter": flt.as_json(),
            "filter_description": flt.describe(),
            "created_by": pseudonym_for(user_id=export.created_by_id) if export.created_by_id else None,
            "created_at": export.created_at.isoformat(),
            "columns": COLUMNS[export.format],
            "notes": NOTES.get(export.format, ""),
            "rows": total,
            "media": {"mode": media.mode, "ttl_s": media.ttl_s if media.mode == "links" else None,
                      "expires_at": expires_at.isoformat() if expires_at else None,
                      "base_url": media.base_url or None, "directory": MEDIA_DIR if media.mode == "bundle" else None},
            **stats,
        }
        ctx = WriteContext(pseudonyms=Pseudonyms(), progress=_progress_updater(export.pk, total),
                           card=lambda: _hf_card(export, datasheet), rows_per_shard=HF_ROWS_PER_SHARD,
                           weighting=flt.weighting or "stored", media=media)
        if spec.rows == "pairs" and spec.columns:
            ctx.index = {name: i for i, name in enumerate(spec.columns)}
        key = export_artifact_key(export=export)
        with tempfile.TemporaryDirectory(prefix=f"export-{export.pk}-") as tmp:
            path = Path(tmp) / "artifact"
            artifact = artifact_write(format=export.format, chunks=chunks, path=path, ctx=ctx)
            uri = storage.object_save_file(key=key, path=path, content_type=artifact.content_type)
        datasheet["media"].update(files=ctx.media_written[0], bytes=ctx.media_written[1])
        previous = (
            Export.objects.filter(format=export.format, status=Export.Status.DONE, content_hash=artifact.sha256)
            .exclude(pk=export.pk).order_by("-version").values_list("version", flat=True).first()
        )
        datasheet.update(
            rows=artifact.rows, content_hash=artifact.sha256, size_bytes=artifact.size, file=artifact.filename,
            uri=uri, identical_to_version=previous, seconds=round(time.monotonic() - started, 3),
            finished_at=timezone.now().isoformat(),
        )
        storage.object_save(key=storage.export_key(export_id=export.pk, filename="datasheet.json"),
                            data=json.dumps(datasheet, indent=2, ensure_ascii=False).encode(),
                            content_type="application/json")
        Export.objects.filter(pk=export.pk).update(
            status=Export.Status.DONE, progress=1.0, row_count=artifact.rows, content_hash=artifact.sha256, uri=uri,
            datasheet=datasheet, finished_at=timezone.now(), error="",
        )
    except Exception as exc:
        logger.exception("export %s failed", export_id)
        Export.objects.filter(pk=export_id).update(status=Export.Status.FAILED, error=f"{type(exc).__name__}: {exc}",
                                                   finished_at=timezone.now())
        raise
    export.refresh_from_db()
    return export
