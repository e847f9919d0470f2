"""A write-only binary stream that hashes every byte it writes (content hash without a second read)."""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO


class HashingWriter(io.RawIOBase):
    """Wraps an open binary file: ``write`` updates a sha256 and forwards. Not seekable on purpose, so ``zipfile``
    writes data descriptors instead of seeking back (which would make the running hash wrong); ``tell`` works
    (pyarrow's writer asks for the position)."""

    def __init__(self, raw: BinaryIO):
        super().__init__()
        self._raw = raw
        self._sha = hashlib.sha256()
        self._pos = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._sha.update(view)
        self._raw.write(view)
        self._pos += len(view)
        return len(view)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        if not self._raw.closed:
            self._raw.flush()

    def close(self) -> None:
        # leave the underlying file to its owner; only mark this wrapper closed
        super().close()

    @property
    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    @property
    def size(self) -> int:
        return self._pos
