"""The videos of an export: left as server URIs (``none``), bundled into the artifact (``bundle``) or replaced by
signed links that expire (``links``).

- ``bundle``: every video a row names is copied once into the artifact under ``media/<object key>``, and the rows
  name it by that path, relative to the artifact's root (the unzipped folder). Plain relative paths, not a
  ``datasets.Video`` feature (decoding needs torchcodec / decord and FFmpeg libraries on the reading machine) nor
  embedded bytes (a candidate is in several pairs: its bytes would be repeated in every row): the folder loads
  offline with ``datasets`` alone, and ``Path(folder) / row["chosen"]`` is the file. Files are copied chunk-wise
  from storage (S3: the GetObject body as it streams), so memory stays bounded whatever the videos' size.
- ``links``: each row names a URL valid ``media_ttl_s`` seconds: an S3 presigned URL, or the app's signed
  ``/media/<token>/`` link on local storage, made absolute with ``media_base_url`` (the address the export was
  requested at). The expiry is in the datasheet."""

from __future__ import annotations

import contextlib
import shutil
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from annotation import storage

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same rows give the same bytes and the same hash

MEDIA_MODES = ("none", "bundle", "links")
MEDIA_DIR = "media"
MIN_TTL_S, MAX_TTL_S = 1, 7 * 24 * 3600  # S3 SigV4 presigned URLs live at most 7 days
DEFAULT_TTL_S = 24 * 3600
# the columns that carry a video URI, in pair rows and in judgment rows
VIDEO_COLUMNS = ("chosen_video", "rejected_video", "video_uri")
COPY_CHUNK = 1 << 20


@dataclass
class MediaResolver:
    """Maps a video URI to what the rows name, and remembers the bundled keys (one entry per video, in order)."""

    mode: str = "none"
    ttl_s: int = DEFAULT_TTL_S
    base_url: str = ""
    keys: dict[str, None] = field(default_factory=dict)  # an ordered set of the object keys to bundle

    def video(self, uri):
        if not uri or self.mode == "none":
            return uri
        key = storage.key_from_uri(uri)
        if self.mode == "bundle":
            self.keys.setdefault(key, None)
            return f"{MEDIA_DIR}/{key}"
        url = storage.object_url(key=key, ttl_s=self.ttl_s)
        if url.startswith("/"):  # local storage: the app's signed path, made absolute
            url = self.base_url.rstrip("/") + url
        return url

    def rows(self, chunks: Iterable[list[tuple]], index: dict[str, int]) -> Iterator[list[tuple]]:
        """The chunks with every video column replaced by ``video(uri)``."""
        positions = [index[name] for name in VIDEO_COLUMNS if name in index]
        if self.mode == "none" or not positions:
            yield from chunks
            return
        for rows in chunks:
            out = []
            for r in rows:
                r = list(r)
                for i in positions:
                    r[i] = self.video(r[i])
                out.append(tuple(r))
            yield out


def zip_add_media(zf: zipfile.ZipFile, resolver: MediaResolver | None) -> tuple[int, int]:
    """Stream every bundled video into ``zf`` (stored: MP4 is already compressed) at ``media/<key>``; returns
    (files, bytes)."""

    if resolver is None or resolver.mode != "bundle":
        return 0, 0
    files = size = 0
    for key in resolver.keys:
        info = zipfile.ZipInfo(f"{MEDIA_DIR}/{key}", date_time=ZIP_DATE)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        with contextlib.closing(storage.object_stream(key=key)) as src, zf.open(info, "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, COPY_CHUNK)
        files += 1
        size += info.file_size
    return files, size
