"""Atomic file replacement (readers see the old or the new content, never a torn file), and
root-only state directories.

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



def remove_if_present(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    """Unlink ``path`` (``directory``: remove it, empty); already gone is no error, as a
    cleanup that runs again (after a kill, or racing another) finds it."""
    try:
        if directory:
            os.rmdir(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass

def private_dir(path: str | os.PathLike[str], mode: int = 0o700) -> None:
    """Make ``path`` a directory that only its owner (root) may enter: created with ``mode``
    when absent (missing parents too), tightened when it exists with group or other bits (an
    older version made it 0755). Idempotent; one ``stat`` when there is nothing to do."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        head = os.path.dirname(path)
        if head and not os.path.isdir(head):
            os.makedirs(head, mode, exist_ok=True)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass  # made meanwhile by another process: checked below like any existing one
        st = os.stat(path)
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)


def secure_state_dirs(root: str | os.PathLike[str], run: str | os.PathLike[str]) -> None:
    """Arca's persistent (``ARCA_ROOT``) and volatile (``ARCA_RUN``) state directories, and
    those below them holding unpacked image layers and container root filesystems, are
    root-only, as podman's storage directories are: layers keep the setuid-root files and
    device nodes of their images, which a local user reaching them could use to become root.
    A state directory that is world-writable with the sticky bit (``ARCA_ROOT=/tmp``: shared,
    not Arca's) or owned by someone else is left alone; the directories below it are still
    made private."""
    for top, below in ((os.fspath(root), ("images", "containers")), (os.fspath(run), ())):
        try:
            st = os.stat(top)
        except FileNotFoundError:
            st = None
        if st is None or (st.st_uid == os.geteuid() and not st.st_mode & 0o1000):
            private_dir(top)
        for name in below:
            private_dir(os.path.join(top, name))
