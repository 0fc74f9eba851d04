"""Deterministic digest of a file tree (the rootfs and guest-runtime digests of the launch
descriptor), and a cache so the Nth container of an image does not re-hash it.

What is hashed, per entry below the root, in byte-wise sorted relative-path order: the path,
the type (file/dir/symlink/char/block/fifo/socket), permission bits (``mode & 0o7777``), uid,
gid, and by type: size + SHA-256 of the content (files), the link target (symlinks), device
major/minor (char/block devices). Not hashed: mtimes/atimes/ctimes, inode numbers, extended
attributes, hard-link identity (a hard link hashes as the regular file it is). Symlinks are never
followed. Names are handled as bytes, so non-UTF-8 names are fine.

Record encoding (one per entry, fed to one SHA-256): every field is length-prefixed
(``<decimal length>:<bytes>``), so no two different trees encode to the same byte stream.

The cache (:func:`rootfs_digest`) trusts only what it can cheaply prove unchanged: an overlayfs
mount whose upperdir is empty shows exactly its lowerdirs, and containerd snapshots and Arca's
image store both treat lower layer directories as immutable. The key is the ordered lowerdir
paths with each lowerdir's (st_dev, st_ino, st_ctime_ns); a layer replaced by a new directory, or
whose top-level entries change, misses the cache. Changing a file deep inside a layer that is in
use is outside that immutability contract and is not detected by the key. The host is untrusted
anyway: a wrong cached digest can only produce a measurement the tenant's policy refuses.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import stat

from arca._internal.fsutil import write_atomic
from arca.host import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    #: ``progress(done, total)``: bytes of file content hashed so far, and in all.
    Progress = Callable[[int, int], None]

#: Read size for content hashing: large reads keep syscalls negligible on big layers.
READ_SIZE = 1 << 20
#: Bump when the record encoding changes, so old cache entries are never reused.
FORMAT_VERSION = b"arca-tree-digest-v1"

_TYPES = (
    (stat.S_ISREG, b"file"),
    (stat.S_ISDIR, b"dir"),
    (stat.S_ISLNK, b"symlink"),
    (stat.S_ISCHR, b"char"),
    (stat.S_ISBLK, b"block"),
    (stat.S_ISFIFO, b"fifo"),
    (stat.S_ISSOCK, b"socket"),
)


def _field(value: bytes | str | int) -> bytes:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return b"%d:" % len(raw) + raw


def _file_sha256(path: bytes, buf: bytearray) -> bytes:
    # O_NOFOLLOW: an entry swapped for a symlink between lstat and open fails instead of being
    # followed out of the tree.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    h = hashlib.sha256()
    view = memoryview(buf)
    try:
        while n := os.readv(fd, [buf]):
            h.update(view[:n])
    finally:
        os.close(fd)
    return h.digest()


def _walk(root: bytes) -> list[tuple[bytes, os.stat_result]]:
    """All entries below ``root`` as (relative path, lstat), unsorted; never follows links."""
    out: list[tuple[bytes, os.stat_result]] = []
    stack = [b""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for entry in it:
                child = os.path.join(rel, entry.name) if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                out.append((child, st))
                if stat.S_ISDIR(st.st_mode):
                    stack.append(child)
    return out


def entry_record(root: bytes, rel: bytes, st: os.stat_result, buf: bytearray) -> bytes:
    """The encoded record of one entry (exposed for tests and for explaining a mismatch)."""
    kind = next((name for test, name in _TYPES if test(st.st_mode)), b"unknown")
    parts = [_field(rel), _field(kind), _field(st.st_mode & 0o7777), _field(st.st_uid),
             _field(st.st_gid)]
    full = os.path.join(root, rel)
    if kind == b"file":
        parts += [_field(st.st_size), _field(_file_sha256(full, buf))]
    elif kind == b"symlink":
        parts.append(_field(os.readlink(full)))
    elif kind in (b"char", b"block"):
        parts += [_field(os.major(st.st_rdev)), _field(os.minor(st.st_rdev))]
    return b"".join(parts) + b"\n"


def tree_digest(root: pathlib.Path, progress: Progress | None = None) -> str:
    """``"sha256:<hex>"`` over the tree below ``root`` (see the module docstring).
    ``progress(done, total)`` is called with the bytes of file content hashed so far and in
    all, after each file."""
    broot = os.fsencode(root)
    if not stat.S_ISDIR(os.stat(broot).st_mode):
        raise NotADirectoryError(f"tree digest: {root} is not a directory")
    h = hashlib.sha256(_field(FORMAT_VERSION))
    buf = bytearray(READ_SIZE)
    entries = sorted(_walk(broot), key=lambda e: e[0])
    total = sum(st.st_size for _, st in entries if stat.S_ISREG(st.st_mode))
    done = 0
    for rel, st in entries:
        h.update(entry_record(broot, rel, st, buf))
        if progress is not None and stat.S_ISREG(st.st_mode):
            done += st.st_size
            progress(done, total)
    return "sha256:" + h.hexdigest()


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _split_lowerdirs(value: str) -> list[str]:
    # overlayfs separates lowerdirs with ':' and escapes a literal ':' in a path as '\:'.
    parts, cur, i = [], [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            cur.append(value[i + 1])
            i += 2
            continue
        if value[i] == ":":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(value[i])
        i += 1
    parts.append("".join(cur))
    return [p for p in parts if p]


def overlay_options(mountpoint: pathlib.Path | str, mountinfo: str | None = None
                    ) -> list[str] | None:
    """The (unescaped) super options of the overlay mounted topmost at ``mountpoint``, or
    ``None`` when what is mounted there last is no overlay (or nothing is)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            mountinfo = f.read()
    target = os.path.realpath(mountpoint)
    found: list[str] | None = None
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        if _unescape_mountinfo(fields[4]) != target:
            continue
        # a later mount on the same point hides the earlier one
        found = _split_options(_unescape_mountinfo(tail[2])) if tail[0] == "overlay" else None
    return found


#: Public for :mod:`arca.host.runtime.userns`, which mounts such a rootfs again.
split_lowerdirs = _split_lowerdirs


def overlay_layers(mountpoint: pathlib.Path, mountinfo: str | None = None) -> (
        tuple[list[str], str | None] | None):
    """(lowerdirs top to bottom, upperdir or None) when ``mountpoint`` is an overlay mount."""
    opts = overlay_options(mountpoint, mountinfo)
    if opts is None:
        return None
    lower: list[str] = []
    upper: str | None = None
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "lowerdir":
            lower += _split_lowerdirs(value)
        elif key == "lowerdir+" and value:
            lower.append(value)
        elif key == "upperdir":
            upper = value
    return (lower, upper) if lower else None


def _split_options(opts: str) -> list[str]:
    # Options are comma-separated; overlayfs escapes a literal ',' in a path as '\,'.
    parts, cur, i = [], [], 0
    while i < len(opts):
        if opts[i] == "\\" and i + 1 < len(opts) and opts[i + 1] == ",":
            cur.append(",")
            i += 2
            continue
        if opts[i] == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(opts[i])
        i += 1
    parts.append("".join(cur))
    return parts


def overlay_cache_key(rootfs: pathlib.Path) -> str | None:
    """The cache key of ``rootfs`` when it is an overlay with an empty upperdir, else None."""
    layers = overlay_layers(rootfs)
    if layers is None:
        return None
    lower, upper = layers
    try:
        if upper is not None and any(os.scandir(upper)):
            return None
        h = hashlib.sha256(_field(FORMAT_VERSION))
        for d in lower:
            st = os.stat(d)
            h.update(_field(d) + _field(st.st_dev) + _field(st.st_ino) + _field(st.st_ctime_ns))
    except OSError:
        return None  # a layer we cannot stat: hash the tree instead of guessing
    return h.hexdigest()


def cached_rootfs_digest(rootfs: pathlib.Path, cache_dir: pathlib.Path | None = None
                         ) -> str | None:
    """The cached digest of ``rootfs`` (None: not an overlay the cache knows, or a miss)."""
    key = overlay_cache_key(rootfs)
    if key is None:
        return None
    try:
        cached = ((cache_dir or _cache_dir()) / key).read_text().strip()
    except OSError:
        return None
    return cached if cached.startswith("sha256:") and len(cached) == 71 else None


def _cache_dir() -> pathlib.Path:
    return paths.root_dir() / "cache" / "rootfs"


def rootfs_digest(rootfs: pathlib.Path, cache_dir: pathlib.Path | None = None,
                  progress: Progress | None = None) -> str:
    """:func:`tree_digest` of ``rootfs``, cached for overlay mounts with an empty upperdir."""
    key = overlay_cache_key(rootfs)
    if key is None:
        return tree_digest(rootfs, progress)
    entry = (cache_dir or _cache_dir()) / key
    try:
        cached = entry.read_text().strip()
        if cached.startswith("sha256:") and len(cached) == 71:
            return cached
    except OSError:
        pass
    digest = tree_digest(rootfs, progress)
    _write_atomic(entry, digest.encode())
    return digest


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    write_atomic(path, data, 0o600, make_parents=True)
