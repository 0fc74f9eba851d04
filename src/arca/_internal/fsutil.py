"""Atomic file replacement: readers see the old or the new content, never a torn file.

Only ``os`` is imported, so the lean ``arca run`` path and the runtime's hot path can use it.
"""

from __future__ import annotations

import os


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, *,
                 durable: bool = True, make_parents: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``.

    ``durable`` fsyncs before the rename, so a host crash leaves the old or the new content,
    never an empty file; state on tmpfs (it dies with the host) skips it. The temporary name is
    unique per call (pid + random), so threads and processes writing the same path race only
    on the rename, and it is removed when anything fails.
    """
    path = os.fspath(path)
    head, name = os.path.split(path)
    if make_parents and head:
        os.makedirs(head, exist_ok=True)
    tmp = os.path.join(head, f".{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
