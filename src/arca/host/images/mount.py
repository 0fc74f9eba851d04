"""overlayfs mounts of image layers (the rootfs of a container or of ``arca measure``).

Uses the mount(2)/umount2(2) system calls through libc: Python has no binding, and spawning
``mount`` per container would cost a process. The rootfs is ``lowerdir=<layers, top first>``
with a fresh, empty upperdir, like containerd's overlay snapshotter, so
:func:`arca.host.treedigest.rootfs_digest` recognizes it and reuses the cached digest.
"""

from __future__ import annotations

import ctypes
import errno
import os

# Every ``arca run`` imports this: paths may be str or Path, and pathlib (~3 ms) and the
# error module are imported only when needed.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from os import PathLike

    from arca.host.images.errors import ImageError

    StrPath = str | PathLike[str]


def _error(msg: str) -> ImageError:
    from arca.host.images.errors import ImageError

    return ImageError(msg)


MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)  # libc is already loaded: no ldconfig lookup
#: Mount data is limited to one page; each lowerdir path costs its length plus one.
MAX_MOUNT_DATA = 4095


def _escape(p: StrPath) -> str:
    # overlayfs separates lowerdirs with ':' and options with ','.
    return os.fspath(p).replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def mount_overlay(target: StrPath, lowers: Sequence[StrPath], upper: StrPath, work: StrPath, *,
                  volatile: bool = False) -> None:
    """Mount the overlay; ``volatile`` skips overlayfs' sync of the upper filesystem at
    unmount (a whole-filesystem sync, ~30 ms), for an upper directory that is thrown away
    afterwards anyway: after a host crash such a directory cannot be mounted again."""
    if not lowers:
        raise _error("an image without layers has no root filesystem")
    data = (f"lowerdir={':'.join(_escape(p) for p in lowers)},upperdir={_escape(upper)},"
            f"workdir={_escape(work)}{',volatile' if volatile else ''}")
    if len(data) > MAX_MOUNT_DATA:
        raise _error(f"overlay mount options are {len(data)} bytes (limit {MAX_MOUNT_DATA}):"
                     " too many layers or too long an ARCA_ROOT")
    for d in (target, upper, work):
        os.makedirs(d, exist_ok=True)
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, data.encode()) != 0:
        err = ctypes.get_errno()
        why = ""
        if err == errno.EPERM and os.geteuid() != 0:  # tell a non-root user what and why
            why = (" (containers need root: their root filesystem is an overlay mount and "
                   "runc creates namespaces and cgroups; run it as root, e.g. sudo arca ...)")
        raise _error(f"overlay mount on {os.fspath(target)} failed: {os.strerror(err)}{why}")


def umount(target: StrPath, *, lazy: bool = False) -> None:
    if _libc.umount2(os.fsencode(target), MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL:  # not a mount point (already unmounted)
            return
        if err == errno.EPERM and os.geteuid() != 0 and not is_mounted(target):
            return  # a non-root caller gets EPERM for any path: nothing was mounted there
        raise _error(f"unmount of {os.fspath(target)} failed: {os.strerror(err)}")


def is_mounted(target: StrPath) -> bool:
    t = os.path.realpath(target)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            return any(line.split()[4] == t for line in f if len(line.split()) > 4)
    except OSError:
        return False
