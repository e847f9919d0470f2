"""``python manage.py export_preferences --format trl_parquet --out pairs.parquet [--rounds 1,2] [--min-agreement 0.6]
[--min-annotators 2] [--source human] [--date-from 2026-01-01] [--date-to 2026-02-01] [--weighting agreement]
[--media none|bundle|links] [--media-ttl-s 86400] [--base-url https://host/] [--user NAME] [--queue]``

Creates a versioned Export (same validation, hashing and datasheet as the web and API paths), runs it in this process
(or, with ``--queue``, on a Celery worker) and copies the artifact to ``--out``. Zipped layouts (videodpo,
hf_datasets) are unpacked when ``--out`` does not end in ``.zip``; the datasheet goes next to it as
``<out>.datasheet.json`` (or ``datasheet.json`` inside an unpacked folder). ``--media bundle`` puts the videos in the
artifact (a single-file format becomes ``<file>.zip``), ``--media links`` names them by signed URLs valid
``--media-ttl-s`` seconds (on local storage made absolute with ``--base-url``, the app's public address)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotation import storage
from annotation.exports.filters import WEIGHTINGS
from annotation.exports.media import MEDIA_MODES
from annotation.management.schema import schema_ensure
from annotation.models import Export
from annotation.services.exports import ExportError, export_artifact_key, export_create, export_run


class Command(BaseCommand):
    help = "Export preference data in one of the formats of docs/annotation.md (streamed, hashed, with a datasheet)."

    def add_arguments(self, parser):
        parser.add_argument("--format", required=True, choices=Export.Format.values)
        parser.add_argument("--out", required=True, help="file (or folder for unpacked videodpo / hf_datasets)")
        parser.add_argument("--rounds", default="", help="comma-separated round ids")
        parser.add_argument("--min-agreement", type=float, default=None)
        parser.add_argument("--min-annotators", type=int, default=None)
        parser.add_argument("--source", default="", help="comma-separated: human, reviewer, model")
        parser.add_argument("--date-from", default=None, help="YYYY-MM-DD (inclusive)")
        parser.add_argument("--date-to", default=None, help="YYYY-MM-DD (inclusive)")
        parser.add_argument("--weighting", choices=WEIGHTINGS, default=None,
                            help="the weight column: stored (default), agreement (as DPO runs), uniform")
        parser.add_argument("--media", choices=MEDIA_MODES, default="none",
                            help="the videos: none (server URIs), bundle (in the artifact), links (signed URLs)")
        parser.add_argument("--media-ttl-s", type=int, default=None, help="links only: their lifetime in seconds")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000/",
                            help="links on local storage: the app's address the links start with")
        parser.add_argument("--user", default=None, help="username recorded as the export's creator")
        parser.add_argument("--chunk-size", type=int, default=20_000)
        parser.add_argument("--queue", action="store_true", help="queue on a Celery worker and return its id")

    def handle(self, *args, **o):
        schema_ensure(stdout=self.stdout)
        flt = {"rounds": o["rounds"], "min_agreement": o["min_agreement"], "min_annotators": o["min_annotators"],
               "source": o["source"], "date_from": o["date_from"], "date_to": o["date_to"], "weighting": o["weighting"],
               "media": o["media"], "media_ttl_s": o["media_ttl_s"]}
        if o["media"] == "links":
            flt["media_base_url"] = o["base_url"]
        actor = None
        if o["user"]:
            actor = get_user_model().objects.filter(username=o["user"]).first()
            if actor is None:
                raise CommandError(f"no user {o['user']!r}")
        try:
            export = export_create(format=o["format"], filter=flt, actor=actor, enqueue=o["queue"])
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
        if o["queue"]:
            self.stdout.write(f"export {export.pk} (version {export.version}) queued")
            return
        try:
            export = export_run(export_id=export.pk, chunk_size=o["chunk_size"])
        except Exception as exc:
            raise CommandError(f"export {export.pk} failed: {exc}") from exc
        out = Path(o["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        key = export_artifact_key(export=export)
        sheet = json.dumps(export.datasheet, indent=2, ensure_ascii=False)
        if key.endswith(".zip") and out.suffix != ".zip":
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / ".export.zip"
            storage.object_download(key=key, path=tmp)
            with zipfile.ZipFile(tmp) as zf:
                zf.extractall(out)
            tmp.unlink()
            (out / "datasheet.json").write_text(sheet, encoding="utf-8")
        else:
            storage.object_download(key=key, path=out)
            out.with_name(out.name + ".datasheet.json").write_text(sheet, encoding="utf-8")
        self.stdout.write(json.dumps({"export_id": export.pk, "format": export.format, "version": export.version,
                                      "rows": export.row_count, "sha256": export.content_hash, "out": str(out)}))
