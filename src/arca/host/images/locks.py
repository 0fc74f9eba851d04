"""File locks (``flock``) for the image and container stores.

``flock`` locks are released by the kernel when the holder dies, so a killed pull never leaves
the store locked. Shared/exclusive pairs let many pulls run while ``prune`` waits for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from arca._internal.fsutil import write_atomic as _write_atomic


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Durably replace ``path`` (store metadata survives a host crash), creating parents."""
    _write_atomic(path, data, mode, make_parents=True)
