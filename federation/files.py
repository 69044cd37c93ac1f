"""Writing node state safely: whole files or nothing, private from the first byte."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Temp file + fsync + rename, ``mode`` from the first byte, in a 0700 directory.

    A crash leaves either the old file or the new one, never half of either; the temp file never
    follows a symlink an attacker planted.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


PRIVATE_UMASK = 0o077
"""Files a node makes are its own: no bits for group or others (folders 0700, files 0600)."""


def make_files_private() -> int:
    """Set this process's umask to 077 and return the previous one.

    Why process-wide: a node's state is written by many libraries (SQLite with its -wal/-shm,
    pandas, MLflow, gRPC's logs), each with its own ``open``; only the umask reaches all of them,
    from the first byte. Called first thing by ``xinyidai node serve`` and by the launcher
    before it writes a federation's folders.
    """
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner can enter (0700), made with its parents if missing.

    An existing folder keeps its mode (the operator's choice; ``exposure`` reports it)."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask; make it exact
    return path


def open_private_append(path: Path) -> BinaryIO:
    """``path`` opened for appending (a log), created 0600 if new - whatever the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o600), "ab")


def exposure(path: Path) -> str | None:
    """Who besides the owner may use ``path`` ("readable by others", "writable by group", ...),
    or None if nobody; for warnings about a node folder."""
    mode = stat.S_IMODE(Path(path).stat().st_mode)
    found = [
        f"{what} by {who}"
        for who, shift in (("others", 0), ("group", 3))
        for what, bit in (("writable", 0o2), ("readable", 0o4), ("enterable", 0o1))
        if mode & (bit << shift)
    ]
    return f"{', '.join(found)} (mode {mode:04o})" if found else None
