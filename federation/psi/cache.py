"""The holder's cache of its blinded set: one 0600 file per salt and code list.

It holds the secret scalar ``b``, so it is refused unless it is a regular file owned by this
user and unreadable by others, and any damage is detected (sha256 trailer) rather than used.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import time
from pathlib import Path

import numpy as np

from federation.files import write_atomic
from federation.psi.errors import PsiCacheError
from federation.psi.results import TAG_BYTES

_CACHE_MAGIC = b"XYDPSIC1"
_CACHE_HEADER = struct.Struct("<8sQQ32s32s")  # magic, created (unix s), n, key, scalar


def read_cache(
    path: Path, key: bytes, n: int, max_age: float | None
) -> tuple[bytes, bytes, np.ndarray] | None:
    """Load a cache file, or None if absent or expired; refuse unsafe or damaged files."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PsiCacheError(path, f"cannot open ({exc.strerror}); delete it to rebuild") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PsiCacheError(path, "is not a regular file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise PsiCacheError(path, "is owned by another user; delete it to rebuild")
        if st.st_mode & 0o077:
            raise PsiCacheError(
                path,
                f"mode {stat.S_IMODE(st.st_mode):04o} lets others read the secret scalar; "
                "delete it (the key may have leaked) to rebuild",
            )
        data = fh.read()
    expected = _CACHE_HEADER.size + n * (TAG_BYTES + 4) + 32
    if len(data) != expected or hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise PsiCacheError(path, "is truncated or damaged; delete it to rebuild")
    magic, created, n_file, key_file, scalar = _CACHE_HEADER.unpack_from(data)
    if magic != _CACHE_MAGIC or n_file != n or key_file != key:
        raise PsiCacheError(path, "belongs to a different code list or version; delete it")
    if max_age is not None and not 0 <= time.time() - created <= max_age:
        return None  # rotate b: rebuilt and overwritten by the caller
    off = _CACHE_HEADER.size
    tags = data[off : off + n * TAG_BYTES]
    rows = np.frombuffer(data, dtype="<u4", count=n, offset=off + n * TAG_BYTES).astype(np.uint32)
    return scalar, tags, rows


def write_cache(path: Path, key: bytes, scalar: bytes, tags: bytes, rows: np.ndarray) -> None:
    """Write atomically (temp file + rename) with mode 0600 from the first byte."""
    header = _CACHE_HEADER.pack(_CACHE_MAGIC, int(time.time()), len(rows), key, scalar)
    body = header + tags + rows.astype("<u4").tobytes()
    write_atomic(path, body + hashlib.sha256(body).digest())
