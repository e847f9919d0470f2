"""Serving local-storage objects to browsers: signed, time-limited, with HTTP range requests (seeking needs them)."""

from __future__ import annotations

import mimetypes
import os
import re

from django.http import FileResponse, HttpResponse, StreamingHttpResponse

RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 256 * 1024


def _file_chunks(path: str, start: int, length: int):
    with open(path, "rb") as fh:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            data = fh.read(min(CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data


def ranged_file_response(path: str, range_header: str | None) -> HttpResponse:
    """200 with the whole file, 206 with one byte range, or 416 for an unsatisfiable range."""
    size = os.path.getsize(path)
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    match = RANGE_RE.match(range_header.strip()) if range_header else None
    if not match or (not match.group(1) and not match.group(2)):
        response = FileResponse(open(path, "rb"), content_type=content_type)
        response["Accept-Ranges"] = "bytes"
        return response
    first, last = match.group(1), match.group(2)
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    else:  # suffix range: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    if start >= size or start > end:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    length = end - start + 1
    response = StreamingHttpResponse(_file_chunks(path, start, length), status=206, content_type=content_type)
    response["Content-Length"] = str(length)
    response["Content-Range"] = f"bytes {start}-{end}/{size}"
    response["Accept-Ranges"] = "bytes"
    return response


# -- Blind media links for the annotator page ------------------------------------------------------------------------
# An object key names the round (rounds/<round>/groups/...), so the annotator page never shows keys: it links to
# /m/<token> where the signed token names only (assignment, shown position, kind). The token is deterministic for a
# reservation (so the prefetched next group hits the browser cache) and expires MEDIA_URL_TTL_S after the reservation.
ASSIGNMENT_MEDIA_SALT = "annotation.media.assignment"
MEDIA_KINDS = {"v": "video_uri", "p": "poster_uri"}


def assignment_media_token(*, assignment_id: int, position: int, kind: str, expires: int) -> str:
    from django.core import signing

    return signing.Signer(salt=ASSIGNMENT_MEDIA_SALT).sign_object([assignment_id, position, kind, expires])


def assignment_media_unsign(token: str) -> tuple[int, int, str, int]:
    """Raises ``signing.BadSignature`` for a forged or malformed token."""
    from django.core import signing

    assignment_id, position, kind, expires = signing.Signer(salt=ASSIGNMENT_MEDIA_SALT).unsign_object(token)
    if kind not in MEDIA_KINDS:
        raise signing.BadSignature("unknown media kind")
    return int(assignment_id), int(position), kind, int(expires)
