"""Atomic file writes, the one implementation for checkpoints, reports and cached frames.

A reader (the function watching its checkpoint, a web server serving a report) must never see half a
file, and two writers of the same path must never clobber each other's temp file: each write goes to
its own ``mkstemp`` file beside the target, is flushed to disk, then renamed over the target. On any
failure the temp file is removed, so a full disk leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write_with(
    path: str | os.PathLike, write: Callable[[BinaryIO], object], *, mode: int = 0o644
) -> None:
    """Call ``write(f)`` on a fresh temp file beside ``path``, then rename it over ``path``.

    ``mode`` is applied before the rename (``mkstemp`` makes 0600 files; reports must stay readable
    by a web server), masked by the process umask as an ordinary ``open`` would be.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, mode & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` (str is UTF-8 encoded) to ``path`` atomically; see :func:`atomic_write_with`."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    atomic_write_with(path, lambda f: f.write(payload), mode=mode)
