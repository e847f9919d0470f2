"""Media links: one signed, expiring token scheme for every object a browser fetches, and the HTTP range responses
that serve local-storage objects (seeking in a video needs them)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import mimetypes
import os
import re
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from django.conf import settings
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.urls import reverse

from annotation.errors import ApplicationError

RANGE_RE = re.compile(r"^bytes=([0-9]{0,18})-([0-9]{0,18})$")  # longer numbers: not a range (served whole)
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


# -- Signed media links ------------------------------------------------------------------------------------------------
# One token scheme and one endpoint (``media_view``) for every object a browser fetches: a token signs a target and an
# expiry (unix seconds). Two kinds of target:
# - ("k", key, user id): an object key (``storage.object_url`` on local storage). On reviewer and researcher pages it
#   is bound to the signed-in user it was made for (served only to that user while they hold a reviewer role) and
#   short-lived (``KEY_LINK_TTL_S`` at most). With no user (``None``) it is a bearer link, like an S3 presigned URL:
#   only an export's ``links`` media mode makes those, for machines that download without a session;
# - ("a", assignment handle, shown position, kind): a blind link for the annotator page. An object key names the
#   round (rounds/<round>/groups/...), so the annotator page never shows keys; the token names only the reservation
#   by its random public handle (never its database id), and is deterministic for it (so the prefetched next group
#   hits the browser cache).
MEDIA_SALT = "annotation.media"
MEDIA_KINDS = {"v": "video_uri", "p": "poster_uri"}
ERR_LINK_INVALID = "Invalid media link."
ERR_LINK_NOT_YOURS = "This media link belongs to another account or to a reservation that has ended."
MAX_TOKEN_CHARS = 2048
# a blind link keeps working this long after its reservation ended (submitted or expired): a page still playing
RESERVATION_GRACE_S = 120
ERR_LINK_EXPIRED = "This media link has expired."
ERR_NO_OBJECT = "No such object."
# an object-key link lives at most this long (a link copied out of a page stops working within minutes)
KEY_LINK_TTL_S = 15 * 60


class MediaLinkError(ApplicationError):
    """A forged, malformed or expired link, or one naming nothing (404)."""

    status = 404


def _cipher() -> AESSIV:
    """AES-SIV (deterministic authenticated encryption) under a key derived from SECRET_KEY: a token is opaque (the
    reservation, position and expiry cannot be read from it), cannot be forged, and is the same for the same target
    (so the prefetched next group's media hit the browser cache)."""
    key = hashlib.sha512(f"{MEDIA_SALT}:{settings.SECRET_KEY}".encode()).digest()  # 64 bytes: AES-256-SIV
    return AESSIV(key)


def media_token(*, target: tuple, expires: int) -> str:
    data = json.dumps([*target, int(expires)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(_cipher().encrypt(data, [MEDIA_SALT.encode()])).decode().rstrip("=")


def _token_payload(token: str):
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return json.loads(_cipher().decrypt(raw, [MEDIA_SALT.encode()]))


def key_media_path(*, key: str, ttl_s: int, user_id: int | None) -> str:
    """The app's signed path to an object key for the signed-in user ``user_id``, valid ``ttl_s`` seconds (at most
    ``KEY_LINK_TTL_S``); with ``user_id=None`` a bearer link valid ``ttl_s`` seconds (export media links)."""
    expires = int(time.time()) + (ttl_s if user_id is None else min(ttl_s, KEY_LINK_TTL_S))
    return reverse("media", kwargs={"token": media_token(target=("k", key, user_id), expires=expires)})


def assignment_media_path(*, handle: str, position: int, kind: str, expires: int) -> str:
    """The blind path to a reservation's video ("v") or poster ("p") at a shown position (``handle``: the
    reservation's public id)."""
    token = media_token(target=("a", str(handle), position, kind), expires=expires)
    return reverse("media", kwargs={"token": token})


def media_target(token: str) -> tuple:
    """The target a token grants, checked for signature and expiry (``MediaLinkError`` otherwise)."""
    if len(token) > MAX_TOKEN_CHARS:
        raise MediaLinkError(ERR_LINK_INVALID)
    try:
        *target, expires = _token_payload(token)
    except (InvalidTag, ValueError, TypeError, binascii.Error) as exc:
        raise MediaLinkError(ERR_LINK_INVALID) from exc
    valid = (len(target) == 3 and target[0] == "k" and isinstance(target[1], str)
             and (target[2] is None or isinstance(target[2], int))) or (
        len(target) == 4 and target[0] == "a" and isinstance(target[1], str) and isinstance(target[2], int)
        and target[3] in MEDIA_KINDS)
    if not valid or not isinstance(expires, int):
        raise MediaLinkError(ERR_LINK_INVALID)
    if expires < time.time():
        raise MediaLinkError(ERR_LINK_EXPIRED)
    return tuple(target)
