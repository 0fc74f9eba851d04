"""overlayfs mounts of image layers (the rootfs of a container or of ``arca measure``).

Uses the mount(2)/umount2(2) system calls through libc: Python has no binding, and spawning
``mount`` per container would cost a process. The rootfs is ``lowerdir=<layers, top first>``
with a fresh, empty upperdir, like containerd's overlay snapshotter, so
:func:`arca.host.treedigest.rootfs_digest` recognizes it and reuses the cached digest.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from arca.host.images.errors import ImageError

MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)  # libc is already loaded: no ldconfig lookup
#: Mount data is limited to one page; each lowerdir path costs its length plus one.
MAX_MOUNT_DATA = 4095


def _escape(p: Path) -> str:
    # overlayfs separates lowerdirs with ':' and options with ','.
    return str(p).replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def mount_overlay(target: Path, lowers: list[Path], upper: Path, work: Path, *,
                  volatile: bool = False) -> None:
    """Mount the overlay; ``volatile`` skips overlayfs' sync of the upper filesystem at
    unmount (a whole-filesystem sync, ~30 ms), for an upper directory that is thrown away
    afterwards anyway: after a host crash such a directory cannot be mounted again."""
    if not lowers:
        raise ImageError("an image without layers has no root filesystem")
    data = (f"lowerdir={':'.join(_escape(p) for p in lowers)},upperdir={_escape(upper)},"
            f"workdir={_escape(work)}{',volatile' if volatile else ''}")
    if len(data) > MAX_MOUNT_DATA:
        raise ImageError(f"overlay mount options are {len(data)} bytes (limit {MAX_MOUNT_DATA}):"
                         " too many layers or too long an ARCA_ROOT")
    for d in (target, upper, work):
        d.mkdir(parents=True, exist_ok=True)
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, data.encode()) != 0:
        err = ctypes.get_errno()
        raise ImageError(f"overlay mount on {target} failed: {os.strerror(err)}")


def umount(target: Path, *, lazy: bool = False) -> None:
    if _libc.umount2(os.fsencode(target), MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        if err == 22:  # EINVAL: not a mount point (already unmounted)
            return
        raise ImageError(f"unmount of {target} failed: {os.strerror(err)}")


def is_mounted(target: Path) -> bool:
    t = os.path.realpath(target)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            return any(line.split()[4] == t for line in f if len(line.split()) > 4)
    except OSError:
        return False
