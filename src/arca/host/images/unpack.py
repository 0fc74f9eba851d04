"""Unpack one layer tar into its own directory, in the overlayfs layer format.

Each layer of the store is a directory used as an overlayfs lowerdir (like containerd's overlay
snapshotter), so OCI whiteouts are converted on the way in: ``.wh.NAME`` becomes a 0/0
character device ``NAME`` and ``.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` on its
directory. A directory that a layer creates only implicitly (a file below it without its own
entry) takes the attributes of the same directory in the lower layers, as it would have after
an overlay copy-up, so the merged view equals a flat unpack (``umoci unpack``).

Refused (:class:`UnsafeArchive`), because the layer comes from an untrusted registry:
absolute entry names and ``..`` components; entries reached through a symlink (nothing is
ever followed while unpacking); relative symlinks whose target climbs above the root; hard links
to names outside the root or to missing files; device nodes when not running as root;
hard links that would bypass any of these (a hard link is the entry it names, held to that
entry's rules at the link's own name: a link to a symlink is a symlink there, ``_hardlink``);
``trusted.*`` extended attributes (they could forge overlayfs whiteouts or redirects); entry
types a container filesystem has no use for. Absolute symlink targets are kept: they are
resolved inside the container's root, never on the host.

Decompression bombs: everything the unpack produces (the decompressed tar stream, sparse holes,
hard-link copy-ups) is metered against :class:`~.limits.ImageLimits`; crossing a limit refuses
the layer before the disk fills (a file too large for what is left is refused at its header,
before any of it is written).

Not done here: digests of the compressed blob (verified when the blob entered the store) and
the atomic placement of the finished directory (the caller renames it into place).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import zstandard

from arca.host.images.digest import Digest, VerifyingWriter
from arca.host.images.errors import DigestMismatch, ImageError, UnsafeArchive
from arca.host.images.limits import ImageLimits, LayerMeter

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
#: Upper bound on entries per layer (default of ImageLimits.layer_entries): a tar of millions of
#: empty files is a cheap way to exhaust inodes and time; real layers stay far below.
MAX_ENTRIES = ImageLimits.layer_entries
#: Extended attributes copied from PAX headers; everything else is dropped (trusted.* refused).
KEPT_XATTR_PREFIXES = ("security.capability", "user.")
READ_CHUNK = 1 << 20
#: PAX extended headers and GNU long names are read whole into memory: refuse larger ones. Go's
#: archive/tar, which writes nearly every image layer, writes none larger (maxSpecialFileSize).
MAX_META_BYTES = 1 << 20
_META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
               tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class BoundedTarInfo(tarfile.TarInfo):
    """TarInfo that refuses headers whose processing would take unbounded memory: oversized
    PAX/GNU long-name headers, and sparse files whose map is not itself bounded (old GNU
    sparse, with its chain of extension blocks, and PAX sparse 1.0, map in the data). No image
    builder writes sparse entries; PAX 0.x sparse (map inside the bounded PAX header) is kept
    and its holes are metered. Hooks tarfile's private ``_proc_*`` methods (stable since 3.x).
    """

    def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _META_TYPES and self.size > MAX_META_BYTES:
            raise UnsafeArchive(f"tar extended header of {self.size} bytes refused (more than "
                                f"{MAX_META_BYTES})")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise UnsafeArchive(f"entry {self.name!r}: GNU sparse file refused (no image builder "
                                "writes them; their maps are unbounded)")
        return super()._proc_member(tf)  # type: ignore[misc,no-any-return]

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, pax_headers: dict[str, str],  # noqa: A002
                           tf: tarfile.TarFile) -> None:
        raise UnsafeArchive(f"entry {next.name!r}: PAX 1.0 sparse file refused (no image "
                            "builder writes them; their maps are unbounded)")


class _HashingReader:
    """File-like reader that hashes everything read through it (the layer's diff_id) and
    charges it to ``meter``, so a bomb is stopped while it decompresses."""

    def __init__(self, raw: IO[bytes] | Any, algorithm: str, meter: LayerMeter) -> None:
        self.raw = raw
        self.hash = hashlib.new(algorithm)
        self.meter = meter

    def read(self, n: int = -1) -> bytes:
        # never "read everything": that would decompress a bomb into memory before counting
        data: bytes = self.raw.read(n if 0 <= n <= READ_CHUNK else READ_CHUNK)
        self.meter.charge_stream(len(data))
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(READ_CHUNK):
            pass


def open_decompressed(blob: Path | IO[bytes] | Any, compression: str) -> IO[bytes] | Any:
    """The decompressed stream of ``blob``: a file's path, or a file-like (``read``) such as
    :class:`BlobStream`, which the returned object does not close."""
    f = open(blob, "rb") if isinstance(blob, Path) else blob  # noqa: SIM115 - closed by caller
    if compression == "gzip":
        return Gunzip(f)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(f, closefd=isinstance(blob, Path))
    if compression == "":
        return f
    if isinstance(blob, Path):
        f.close()
    raise ImageError(f"unsupported layer compression {compression!r}")


class Gunzip:
    """gzip decompression as ``read(n)``: ``zlib`` in 1 MiB steps (``gzip.GzipFile`` reads
    its input 8 KiB at a time through three Python layers: a fifth of an unpack's CPU). Every
    member's CRC-32 and length are checked by zlib; members may follow each other and zero
    padding may end the stream, as ``gzip.GzipFile`` accepts; anything else after a member is
    refused, and so is a stream that ends inside one."""

    def __init__(self, src: IO[bytes] | Any) -> None:
        self.src = src
        self._d = zlib.decompressobj(31)  # 31: gzip header and trailer

    def read(self, n: int = -1) -> bytes:
        n = READ_CHUNK if n < 0 or n > READ_CHUNK else n
        while True:
            if self._d.eof:  # a member ended: what follows it is in unused_data
                tail = (self._d.unused_data + self._d.unconsumed_tail).lstrip(b"\0")
                while len(tail) < 2:  # zero padding, or a next member's magic split in two
                    more = self.src.read(READ_CHUNK)
                    if not more:
                        if tail:
                            raise gzip.BadGzipFile("trailing garbage after the gzip stream")
                        return b""
                    tail = (tail + more).lstrip(b"\0") if not tail else tail + more
                if not tail.startswith(b"\x1f\x8b"):
                    raise gzip.BadGzipFile("trailing garbage after the gzip stream")
                self._d = zlib.decompressobj(31)
                data = self._d.decompress(tail, n)
            elif self._d.unconsumed_tail:  # input left over when n bytes were out
                data = self._d.decompress(self._d.unconsumed_tail, n)
            else:
                chunk = self.src.read(READ_CHUNK)
                if not chunk:
                    raise EOFError("compressed stream ended before the end-of-stream marker")
                data = self._d.decompress(chunk, n)
            if data:
                return data

    def close(self) -> None:
        pass  # the source is its owner's


class BlobStream:
    """A compressed layer blob as a file-like ``read``, pulled from ``chunks`` (a registry
    download, a layout file) and checked as it passes: its size bound on every chunk and its
    digest at :meth:`finish`, by ``check`` (a :class:`~.digest.VerifyingWriter` without a
    file). Nothing of the blob is stored: the layer is unpacked from the stream into a
    scratch directory that becomes the layer only after both digests matched."""

    def __init__(self, chunks: Iterable[bytes], check: VerifyingWriter) -> None:
        self._it = iter(chunks)
        self._buf = memoryview(b"")
        self.check = check

    def read(self, n: int = -1) -> bytes:
        if not self._buf:
            for chunk in self._it:
                if chunk:
                    self.check.write(chunk)
                    self._buf = memoryview(chunk)
                    break
            else:
                return b""
        if 0 <= n < len(self._buf):
            out, self._buf = self._buf[:n], self._buf[n:]
        else:
            out, self._buf = self._buf, memoryview(b"")
        return bytes(out)

    def finish(self) -> None:
        """Read what is left (a tar's trailing blocks may end before the blob does) and check
        size and digest."""
        while self.read(READ_CHUNK):
            pass
        self.check.finish()

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()  # a generator's own cleanup (the HTTP response)


def entry_parts(name: str) -> list[str]:
    """The components of a tar entry name, or :class:`UnsafeArchive` for hostile names."""
    if name.startswith("/"):
        raise UnsafeArchive(f"layer entry {name!r}: absolute path refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"layer entry {name!r}: '..' component refused")
    if any("\x00" in p for p in parts):
        raise UnsafeArchive(f"layer entry {name!r}: NUL byte in name")
    return parts


def symlink_escapes(parts: list[str], target: str) -> bool:
    """True when a relative ``target`` of the link at ``parts`` climbs above the root."""
    if target.startswith("/"):
        return False  # resolved against the container root, which clamps '..' at '/'
    depth = len(parts) - 1  # the directory holding the link
    for comp in target.split("/"):
        if comp == "..":
            depth -= 1
            if depth < 0:
                return True
        elif comp not in ("", "."):
            depth += 1
    return False


class LayerUnpacker:
    """Applies one layer's tar stream to ``dest`` (an empty directory), given the lower layers
    (top first) so implicit directories and cross-layer hard links resolve as in a flat unpack.
    """

    def __init__(self, dest: Path, lowers: list[Path], *, privileged: bool | None = None,
                 meter: LayerMeter | None = None, max_entries: int = MAX_ENTRIES) -> None:
        self.dest = dest
        self.lowers = lowers
        self.privileged = os.geteuid() == 0 if privileged is None else privileged
        self.entries = 0
        self.max_entries = max_entries
        # bytes written beyond the tar stream (sparse holes, copy-ups) are charged here; the
        # stream itself is charged by the reader feeding the tar
        self.meter = meter or LayerMeter("layer", ImageLimits.layer_bytes)

    # -- path helpers -------------------------------------------------------------------------
    def _path(self, parts: list[str]) -> str:
        return os.path.join(self.dest, *parts)

    def _lower_lstat(self, parts: list[str]) -> tuple[Path, os.stat_result] | None:
        """What the merged lower layers show at ``parts``, resolved component by component
        without following any symlink (a lower layer's ``a -> /etc`` must never lead to the
        host's /etc): None when absent, whited out, or below a non-directory."""
        for lower in self.lowers:
            cur = str(lower)
            opaque = False
            for i, comp in enumerate(parts):
                cur = os.path.join(cur, comp)
                try:
                    st = os.lstat(cur)  # every prefix before it was checked to be a directory
                except FileNotFoundError:
                    break  # not in this layer: look in the next one down
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    return None  # whited out: hidden in every layer below
                if i == len(parts) - 1:
                    return Path(cur), st
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a file or symlink here hides everything below it
                with contextlib.suppress(OSError):
                    opaque = opaque or os.getxattr(cur, OPAQUE_XATTR,
                                                   follow_symlinks=False) == b"y"
            if opaque:
                return None  # an opaque directory hides the layers below
        return None

    def _ensure_parents(self, parts: list[str], name: str) -> None:
        """Make sure every parent of ``parts`` is a real directory inside ``dest``."""
        for i in range(1, len(parts)):
            cur = parts[:i]
            p = self._path(cur)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                self._implicit_dir(cur, name)
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeArchive(
                    f"layer entry {name!r}: goes through symlink {'/'.join(cur)!r}, refused")
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                os.unlink(p)  # a whiteout earlier in this layer, now recreated as a directory
                os.mkdir(p, 0o755)
                self._set_opaque(p)
                continue
            raise UnsafeArchive(
                f"layer entry {name!r}: parent {'/'.join(cur)!r} is not a directory")

    def _implicit_dir(self, parts: list[str], name: str) -> None:
        p = self._path(parts)
        lower = self._lower_lstat(parts)
        if lower is not None and stat.S_ISLNK(lower[1].st_mode):
            raise UnsafeArchive(
                f"layer entry {name!r}: goes through symlink {'/'.join(parts)!r} of a lower "
                "layer, refused")
        if lower is not None and stat.S_ISDIR(lower[1].st_mode):
            st = lower[1]
            os.mkdir(p)
            os.chown(p, st.st_uid, st.st_gid)
            os.chmod(p, stat.S_IMODE(st.st_mode))
        elif lower is not None:
            raise UnsafeArchive(
                f"layer entry {name!r}: parent {'/'.join(parts)!r} is not a directory in a "
                "lower layer")
        else:
            os.mkdir(p, 0o755)
            os.chmod(p, 0o755)  # noqa: S103 - the conventional mode of a directory in an image

    def _set_opaque(self, p: str) -> None:
        if not self.privileged:
            raise UnsafeArchive("opaque directories need root (trusted.* xattrs)")
        os.setxattr(p, OPAQUE_XATTR, b"y", follow_symlinks=False)

    def _clear(self, p: str, keep_dir: bool) -> bool:
        """Remove what is at ``p`` unless it is a directory and ``keep_dir``; True if a
        directory was kept."""
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            shutil.rmtree(p)
        else:
            os.unlink(p)
        return False

    # -- entries ------------------------------------------------------------------------------
    def apply(self, tf: tarfile.TarFile) -> None:
        # tf.next(), not iteration: TarFile keeps every member it read in tf.members, which for
        # millions of entries is gigabytes; nothing here needs the earlier ones
        while (member := tf.next()) is not None:
            tf.members.clear()  # type: ignore[attr-defined]
            self.entries += 1
            if self.entries > self.max_entries:
                raise UnsafeArchive(
                    f"{self.meter.label}: more than {self.max_entries} entries (per-layer "
                    f"limit; raise {ImageLimits.env_name('layer_entries')} if the image is "
                    "legitimate)", limit=self.max_entries)
            try:
                self._apply_one(tf, member)
            except (UnsafeArchive, ImageError):
                raise
            except OSError as e:
                raise ImageError(f"layer entry {member.name!r}: {e.strerror or e}") from None
            except (OverflowError, ValueError) as e:  # hostile PAX numbers (mtime, uid, ...)
                raise UnsafeArchive(f"layer entry {member.name!r}: {e}") from None

    def _apply_one(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = entry_parts(m.name)
        if not parts:
            return  # the root directory itself: its attributes are the mount's, not ours
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._ensure_parents(parts, m.name)
            self._whiteout(parts, m.name)
            return
        self._ensure_parents(parts, m.name)
        p = self._path(parts)
        xattrs = self._xattrs(m)
        if m.isdir():
            if self._clear_for_dir(p, parts):
                pass
            else:
                os.mkdir(p, 0o700)
        elif m.isreg():
            # Refuse a file too large for what is left before writing a byte of it: what of it
            # the reader has not charged yet is its end in the stream minus what was read. A
            # sparse file's holes are not in the stream at all: charged here on top.
            sparse: list[tuple[int, int]] | None = m.sparse  # type: ignore[assignment]
            stored = sum(size for _, size in sparse) if sparse else m.size
            if stored < m.size:
                self.meter.charge(m.size - stored)
            self.meter.check_ahead(max(0, m.offset_data + stored - self.meter.streamed))
            self._clear(p, keep_dir=False)
            src = tf.extractfile(m)
            assert src is not None
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
            try:
                while chunk := src.read(READ_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        elif m.issym():
            if symlink_escapes(parts, m.linkname):
                raise UnsafeArchive(
                    f"layer entry {m.name!r}: symlink target {m.linkname!r} escapes the root")
            self._clear(p, keep_dir=False)
            os.symlink(m.linkname, p)
        elif m.islnk():
            self._hardlink(parts, m)
            return  # a hard link shares its target's inode and attributes
        elif m.ischr() or m.isblk():
            if not self.privileged:
                raise UnsafeArchive(
                    f"layer entry {m.name!r}: device file refused when unprivileged")
            self._clear(p, keep_dir=False)
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(p, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            self._clear(p, keep_dir=False)
            os.mkfifo(p, 0o600)
        else:
            raise UnsafeArchive(f"layer entry {m.name!r}: unsupported tar entry type {m.type!r}")
        self._attrs(p, m, xattrs)

    def _clear_for_dir(self, p: str, parts: list[str]) -> bool:
        """Prepare ``p`` for a directory entry; True when a directory is already there."""
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            return True
        whiteout = stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        os.unlink(p)
        os.mkdir(p, 0o700)
        if whiteout:
            self._set_opaque(p)  # the lower directory was deleted: hide its contents
        else:
            # A non-directory placed earlier in this layer replaced (in a flat unpack: removed)
            # any lower directory here; the new directory must keep hiding its contents.
            lower = self._lower_lstat(parts)
            if lower is not None and stat.S_ISDIR(lower[1].st_mode):
                self._set_opaque(p)
        return True

    def _attrs(self, p: str, m: tarfile.TarInfo, xattrs: dict[str, bytes]) -> None:
        if self.privileged:
            os.chown(p, m.uid, m.gid, follow_symlinks=False)
        if not m.issym():
            # after chown, which clears set-id bits
            os.chmod(p, m.mode & 0o7777)
        for key, value in xattrs.items():
            os.setxattr(p, key, value, follow_symlinks=False)
        if m.isreg():
            os.utime(p, ns=(int(m.mtime * 1e9), int(m.mtime * 1e9)), follow_symlinks=False)

    def _xattrs(self, m: tarfile.TarInfo) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for key, value in (m.pax_headers or {}).items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if name.startswith("trusted."):
                raise UnsafeArchive(f"layer entry {m.name!r}: extended attribute {name!r} "
                                    "refused (could forge overlayfs metadata)")
            if name.startswith(KEPT_XATTR_PREFIXES) and self.privileged:
                out[name] = value.encode("utf-8", "surrogateescape")
        return out

    def _whiteout(self, parts: list[str], name: str) -> None:
        base = parts[-1]
        parent = parts[:-1]
        if base == OPAQUE_MARKER:
            self._set_opaque(self._path(parent) if parent else str(self.dest))
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk, ...): meaningless here
        victim = base[len(WHITEOUT_PREFIX):]
        if victim in ("", ".", ".."):
            raise UnsafeArchive(f"layer entry {name!r}: malformed whiteout")
        p = self._path([*parent, victim])
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            if not self.privileged:
                raise UnsafeArchive(f"layer entry {name!r}: whiteouts need root") from None
            os.mknod(p, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            return
        # The whiteout names something this layer itself created: per the image spec it only
        # applies to lower layers; an entry here already hides a lower non-directory, and an
        # opaque marker hides a lower directory's contents.
        if stat.S_ISDIR(st.st_mode):
            self._set_opaque(p)

    def _merged_lstat(self, parts: list[str], name: str
                      ) -> tuple[str, os.stat_result, bool] | None:
        """What the merged view of this layer over the lower ones shows at ``parts``, looked
        up as overlayfs does, component by component and without following anything: the
        topmost entry wins; a whiteout (in any layer, this one included) hides everything
        below it; a non-directory stops the merge of the layers below; an opaque directory
        hides the lower layers' contents. Returns (path, lstat, in this layer) or None when
        nothing is there. A symlink where a directory is needed is refused
        (:class:`UnsafeArchive`): nothing is ever followed while unpacking."""
        # (layer index, where the directory looked up so far is in that layer); 0 is this one
        dirs = [(j, str(d)) for j, d in enumerate([self.dest, *self.lowers])]
        for i, comp in enumerate(parts):
            last = i == len(parts) - 1
            top: tuple[str, os.stat_result, bool] | None = None
            below: list[tuple[int, str]] = []  # where this directory continues, top first
            for j, d in dirs:
                cur = os.path.join(d, comp)
                try:
                    st = os.lstat(cur)
                except FileNotFoundError:
                    continue
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    break  # whited out: nothing below shows
                if top is None:
                    top = (cur, st, j == 0)
                    if last:
                        return top
                    if stat.S_ISLNK(st.st_mode):
                        raise UnsafeArchive(
                            f"layer entry {name!r}: hard link target goes through symlink "
                            f"{'/'.join(parts[:i + 1])!r}, refused")
                    if not stat.S_ISDIR(st.st_mode):
                        return None  # a file here hides everything below it
                elif not stat.S_ISDIR(st.st_mode):
                    break  # a lower non-directory under a directory: the merge stops
                below.append((j, cur))
                with contextlib.suppress(OSError):
                    if os.getxattr(cur, OPAQUE_XATTR, follow_symlinks=False) == b"y":
                        break  # opaque: the lower layers' contents are hidden
            if top is None:
                return None
            dirs = below
        return None

    def _hardlink(self, parts: list[str], m: tarfile.TarInfo) -> None:
        """A hard link is what it names: the entry the merged view (this layer over the lower
        ones) shows at its target, placed at the link's own name and held to the rules an
        entry of that type at that name is held to. So a link to a symlink (or to a link to
        one, in any layer) is a symlink at the link's name, refused when its target climbs
        above the root from there; a link to something deleted or hidden (a whiteout, an
        opaque directory, in this layer or below) is a link to nothing; a link to a device
        needs the privileges a device entry needs. In this layer the link shares the inode;
        a lower layer's entry is copied up (a layer directory cannot link across layers)."""
        tparts = entry_parts(m.linkname)
        if not tparts:
            raise UnsafeArchive(f"layer entry {m.name!r}: hard link to the root refused")
        p = self._path(parts)
        found = self._merged_lstat(tparts, m.name)
        if found is None:
            raise UnsafeArchive(
                f"layer entry {m.name!r}: hard link target {m.linkname!r} does not exist")
        src, tst, here = found
        kind = stat.S_IFMT(tst.st_mode)
        if kind == stat.S_IFDIR:
            raise UnsafeArchive(f"layer entry {m.name!r}: hard link to a directory")
        if tparts[:len(parts)] == parts and tparts != parts:
            raise UnsafeArchive(f"layer entry {m.name!r}: hard link would replace the "
                                f"directory holding its target {m.linkname!r}")
        if kind == stat.S_IFLNK:
            target = os.readlink(src)
            if symlink_escapes(parts, target):
                raise UnsafeArchive(
                    f"layer entry {m.name!r}: hard link to symlink {m.linkname!r}, whose "
                    f"target {target!r} escapes the root from {m.name!r}")
        elif kind in (stat.S_IFCHR, stat.S_IFBLK) and not self.privileged:
            raise UnsafeArchive(
                f"layer entry {m.name!r}: device file refused when unprivileged")
        elif kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK):
            raise UnsafeArchive(f"layer entry {m.name!r}: hard link to an unsupported file "
                                "type")
        if here:
            if src == p:
                return
            self._clear(p, keep_dir=False)
            os.link(src, p, follow_symlinks=False)
            return
        # The target lives in a lower layer: copy it up (same content, type, mode and owner;
        # only the link count differs).
        if kind == stat.S_IFREG:
            # a copy-up writes bytes the stream does not hold: a million links to one big
            # lower file would otherwise be a bomb
            self.meter.charge(tst.st_size)
            self._clear(p, keep_dir=False)
            shutil.copy2(src, p, follow_symlinks=False)
        else:
            self._clear(p, keep_dir=False)
            if kind == stat.S_IFLNK:
                os.symlink(os.readlink(src), p)
            elif kind == stat.S_IFIFO:
                os.mkfifo(p, 0o600)
            else:
                os.mknod(p, kind | 0o600, tst.st_rdev)
        if self.privileged:
            os.chown(p, tst.st_uid, tst.st_gid, follow_symlinks=False)
        if kind != stat.S_IFLNK:
            os.chmod(p, stat.S_IMODE(tst.st_mode))


def unpack_layer(
    blob: Path | BlobStream,
    compression: str,
    dest: Path,
    lowers: list[Path],
    diff_id: Digest | None,
    *,
    limits: ImageLimits | None = None,
    meter: LayerMeter | None = None,
) -> None:
    """Unpack ``blob`` (a file, or a :class:`BlobStream` whose digest is checked here too) into
    the empty directory ``dest`` and check its uncompressed digest.

    ``meter`` counts what the layer produces (default: a fresh one at ``limits.layer_bytes``,
    named after the blob); crossing a limit raises :class:`UnsafeArchive` and leaves a
    partly written ``dest`` for the caller to remove. When the blob's own digest does not
    match, that is the error raised (not what its corrupt content made the unpack say)."""
    limits = limits or ImageLimits()
    name = blob.name[:12] if isinstance(blob, Path) else "stream"
    meter = meter or LayerMeter(f"layer {name}", limits.layer_bytes)
    stream = blob if isinstance(blob, BlobStream) else None
    raw = open_decompressed(blob, compression)
    try:
        reader = _HashingReader(raw, diff_id.algorithm if diff_id else "sha256", meter)
        try:
            with tarfile.open(fileobj=reader, mode="r|", bufsize=READ_CHUNK,  # type: ignore[call-overload]
                              tarinfo=BoundedTarInfo) as tf:
                LayerUnpacker(dest, lowers, meter=meter,
                              max_entries=limits.layer_entries).apply(tf)
            reader.drain()  # the tar's trailing padding belongs to the diff_id too
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile,
                zstandard.ZstdError, UnsafeArchive) as e:
            if stream is not None:
                stream.finish()  # a blob that is not the one named: that is the error
            if isinstance(e, UnsafeArchive):
                raise
            if isinstance(e, tarfile.ReadError):
                raise UnsafeArchive(f"layer is not a valid tar archive: {e}") from None
            if isinstance(e, tarfile.TarError):
                raise UnsafeArchive(f"layer tar is malformed: {e}") from None
            raise DigestMismatch(f"layer could not be decompressed (corrupt or truncated): "
                                 f"{e}") from None
        if stream is not None:
            stream.finish()
    finally:
        raw.close()
    if diff_id is not None:
        actual = reader.hash.hexdigest()
        if actual != diff_id.hex:
            raise DigestMismatch(
                f"layer content digest (diff_id) mismatch: config says {diff_id}, "
                f"tar is {diff_id.algorithm}:{actual}",
                expected=str(diff_id), actual=f"{diff_id.algorithm}:{actual}")
