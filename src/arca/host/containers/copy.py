"""``arca cp``: files between a container's root filesystem and the host, as podman's.

The container's tree is hostile: its processes (while it runs) and its image (always) choose
its symlinks, so every path in it is resolved *inside* its root, as ``openat2``'s
``RESOLVE_IN_ROOT`` does, here in Python on directory file descriptors: one component at a
time with ``O_NOFOLLOW``; a symlink's target is read and walked again from the container's
root (absolute) or the current directory (relative); ``..`` pops a stack of directories this
walk opened itself, never asks the kernel, so it stops at the root. A component swapped for a
symlink between our look and our open fails the ``O_NOFOLLOW``/``O_DIRECTORY`` open: an
error, never a step outside. Inside a copied directory, symlinks are copied as symlinks, never
followed; files are opened ``O_NOFOLLOW|O_NONBLOCK`` and must be regular files when opened.

The host side is the caller's own: ordinary paths. Modes are kept without setuid/setgid bits
(a container's setuid-root file must not become one on the host, nor a host one in a
container); what is created is owned by the caller (root), as podman's ``cp`` does without
``--archive``. Device nodes and sockets are skipped (named on stderr): they are not content.
"""

from __future__ import annotations

import os
import stat
import sys

from arca.errors import ArcaError, InvalidInput, StateError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO

    from arca.host.containers.engine import Engine
    from arca.host.containers.state import ContainerRecord

#: The kernel's own limit on symlinks in one lookup (ELOOP after it).
MAX_LINKS = 40
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Kept mode bits: permissions and sticky, never setuid/setgid.
_MODE = 0o1777


class CopyError(ArcaError):
    """A copy that cannot be done as asked (missing source, file over a directory...)."""


class Entry:
    """One node of a tree being copied: ``rel`` below the copy's top ("" for the top)."""

    __slots__ = ("rel", "kind", "mode", "fd", "target", "mtime")

    def __init__(self, rel: str, kind: str, mode: int, mtime: float, fd: int = -1,
                 target: str = "") -> None:
        self.rel, self.kind, self.mode, self.mtime = rel, kind, mode, mtime
        self.fd = fd  # a regular file's open descriptor (closed by the walker)
        self.target = target  # a symlink's target


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "other"


class InRoot:
    """A directory tree entered only through its root's descriptor (``root_fd``, not owned)."""

    def __init__(self, root_fd: int, what: str) -> None:
        self.root_fd = root_fd
        self.what = what  # for messages: "container web"

    def resolve(self, path: str, *, must_exist: bool = True) -> tuple[int, str | None, bool]:
        """``(parent_fd, name, exists)`` for ``path`` resolved in the root (symlinks
        followed, the last one too); ``name`` None: ``path`` is the root itself or a
        directory reached by ``..``, and ``parent_fd`` is that directory. The caller closes
        ``parent_fd``. ``must_exist`` False: a missing last component is allowed."""
        stack = [os.dup(self.root_fd)]
        parts = [p for p in path.split("/")]
        links = 0
        try:
            while True:
                while parts and parts[0] in ("", "."):
                    parts.pop(0)
                if not parts:
                    top = stack.pop()
                    return top, None, True
                c = parts.pop(0)
                if c == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                last = all(p in ("", ".") for p in parts)
                try:
                    st = os.stat(c, dir_fd=stack[-1], follow_symlinks=False)
                except FileNotFoundError:
                    if last and not must_exist:
                        return stack.pop(), c, False
                    raise CopyError(f"{self.what}: {path}: no such file or directory"
                                    ) from None
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > MAX_LINKS:
                        raise CopyError(f"{self.what}: {path}: too many levels of symlinks")
                    target = os.readlink(c, dir_fd=stack[-1])
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                    parts = target.split("/") + parts
                    continue
                if last and not stat.S_ISDIR(st.st_mode):
                    if parts:  # "file/": a directory was asked for
                        raise CopyError(f"{self.what}: {path}: not a directory")
                    return stack.pop(), c, True
                if not stat.S_ISDIR(st.st_mode):
                    raise CopyError(f"{self.what}: {path}: not a directory")
                stack.append(os.open(c, _DIR, dir_fd=stack[-1]))
        except OSError as e:
            raise CopyError(f"{self.what}: {path}: {e.strerror}") from None
        finally:
            for fd in stack:
                os.close(fd)


# -- reading a tree: the container's (in its root) or the host's -----------------------------
def walk_fd(parent_fd: int, name: str | None, rel: str = "") -> Iterator[Entry]:
    """The tree at ``name`` in ``parent_fd`` (``None``: ``parent_fd`` itself), directories
    before their content, nothing followed."""
    if name is None:
        fd = os.dup(parent_fd)
        st = os.fstat(fd)
    else:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        kind = _kind(st.st_mode)
        if kind == "symlink":
            yield Entry(rel, kind, 0o777, st.st_mtime,
                        target=os.readlink(name, dir_fd=parent_fd))
            return
        if kind in ("fifo", "other"):
            yield Entry(rel, kind, st.st_mode & _MODE, st.st_mtime)
            return
        fd = os.open(name, _DIR if kind == "dir" else _FILE, dir_fd=parent_fd)
        st = os.fstat(fd)  # what was opened, not what was looked at
    try:
        kind = _kind(st.st_mode)
        if kind == "file":
            os.set_blocking(fd, True)
            yield Entry(rel, "file", st.st_mode & _MODE, st.st_mtime, fd=fd)
            return
        if kind != "dir":
            yield Entry(rel, "other", st.st_mode & _MODE, st.st_mtime)
            return
        yield Entry(rel, "dir", st.st_mode & _MODE, st.st_mtime)
        for child in sorted(os.listdir(fd)):
            yield from walk_fd(fd, child, f"{rel}/{child}" if rel else child)
    finally:
        os.close(fd)


def walk_host(path: str) -> Iterator[Entry]:
    """The caller's tree at ``path`` (its last symlink followed, as ``cp`` does for a named
    source; symlinks below it copied as symlinks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise CopyError(f"{path}: {e.strerror}") from None
    try:
        yield from walk_fd(fd, None)
    finally:
        os.close(fd)


# -- writing a tree: into the container (in its root) or onto the host ------------------------
class Writer:
    """Creates entries below the directory ``top_fd`` (the copy's parent) under ``name``;
    never follows a symlink it finds there (it replaces one in its way, as ``cp`` does)."""

    def __init__(self, top_fd: int, name: str | None, what: str) -> None:
        self.top_fd, self.name, self.what = top_fd, name, what
        self.dirs: dict[str, int] = {}  # rel -> open directory

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()

    def _at(self, rel: str) -> tuple[int, str | None]:
        if not rel:
            return self.top_fd, self.name
        head, _, tail = rel.rpartition("/")
        return self.dirs[head], tail

    def put(self, e: Entry) -> None:
        parent, name = self._at(e.rel)
        if name is None:  # the top is an existing directory (the root, or "dir/.")
            if e.kind != "dir":
                raise CopyError(f"{self.what}: cannot copy a {e.kind} over a directory")
            self.dirs[e.rel] = os.dup(parent)
            return
        try:
            cur = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            cur = None
        if cur is not None and (e.kind != "dir" or not stat.S_ISDIR(cur.st_mode)):
            if stat.S_ISDIR(cur.st_mode):
                raise CopyError(f"{self.what}: cannot overwrite directory {e.rel or name} "
                                f"with a {e.kind}")
            if e.kind == "dir" or not stat.S_ISREG(cur.st_mode):
                os.unlink(name, dir_fd=parent)  # a symlink, fifo... in the way: replaced
                cur = None
        if e.kind == "dir":
            if cur is None:
                os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _DIR, dir_fd=parent)
            os.chmod(fd, e.mode)
            self.dirs[e.rel] = fd
        elif e.kind == "file":
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
            out = os.open(name, flags | os.O_CLOEXEC, 0o600, dir_fd=parent)
            try:
                if not stat.S_ISREG(os.fstat(out).st_mode):
                    raise CopyError(f"{self.what}: {e.rel or name} is not a regular file")
                while True:
                    chunk = os.read(e.fd, 1 << 20)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view):]
                os.chmod(out, e.mode)
                os.utime(out, (e.mtime, e.mtime))
            finally:
                os.close(out)
        elif e.kind == "symlink":
            os.symlink(e.target, name, dir_fd=parent)
        elif e.kind == "fifo":
            os.mkfifo(name, e.mode, dir_fd=parent)
        else:
            print(f"arca cp: skipped {e.rel or name}: a device or socket", file=sys.stderr)


def copy_tree(entries: Iterator[Entry], writer: Writer) -> None:
    try:
        for e in entries:
            writer.put(e)
    except OSError as err:
        raise CopyError(f"{writer.what}: {err.strerror}") from None
    finally:
        writer.close()


def host_target(dest: str, src_name: str) -> tuple[int, str | None]:
    """Where on the host a copy of ``src_name`` goes, as ``cp``/podman decide: into an
    existing directory under its own name, else at ``dest`` (its parent must exist)."""
    dest_abs = os.path.abspath(dest)
    if os.path.isdir(dest_abs):
        if src_name == ".":  # "dir/." copies the content into an existing directory
            return os.open(dest_abs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), None
        return os.open(dest_abs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), src_name
    if dest.endswith("/"):
        raise CopyError(f"{dest}: no such directory")
    parent = os.path.dirname(dest_abs)
    try:
        return os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), \
            os.path.basename(dest_abs)
    except OSError as e:
        raise CopyError(f"{parent}: {e.strerror}") from None


def container_target(root: InRoot, dest: str, src_name: str) -> tuple[int, str | None]:
    """The same rule inside the container, every lookup in its root."""
    fd, name, exists = root.resolve(dest, must_exist=False)
    if not exists and dest.endswith("/"):
        os.close(fd)
        raise CopyError(f"{root.what}: {dest}: no such directory")
    if name is None:
        return fd, (None if src_name == "." else src_name)
    if exists and stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
        sub = os.open(name, _DIR, dir_fd=fd)
        os.close(fd)
        return sub, (None if src_name == "." else src_name)
    return fd, name


def src_name(path: str) -> str:
    """The name a copied source keeps: its last component (``.`` for ``dir/.``)."""
    stripped = path.rstrip("/")
    if path.endswith("/.") or stripped in ("", "."):
        return "."
    return os.path.basename(stripped) or "."


# -- tar archives for ``-`` ---------------------------------------------------------------------
def write_tar(entries: Iterator[Entry], top: str, out: IO[bytes]) -> None:
    """``arca cp CID:PATH -``: the tree as a tar stream (names under ``top``)."""
    import tarfile

    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "fifo": tarfile.FIFOTYPE}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            if e.kind not in kinds:
                print(f"arca cp: skipped {e.rel}: a device or socket", file=sys.stderr)
                continue
            info = tarfile.TarInfo(f"{top}/{e.rel}" if e.rel else top)
            info.type, info.mode, info.mtime = kinds[e.kind], e.mode, int(e.mtime)
            if e.kind == "symlink":
                info.linkname = e.target
            if e.kind == "file":
                info.size = os.fstat(e.fd).st_size
                with os.fdopen(os.dup(e.fd), "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def extract_tar(src: IO[bytes], into: str) -> None:
    """``arca cp - CID:PATH``: the stream unpacked into the private directory ``into`` with
    tarfile's ``data`` filter (no absolute names, no ``..``, no links out, no devices, no
    setuid bits), to be copied into the container from there."""
    import tarfile

    try:
        with tarfile.open(fileobj=src, mode="r|*") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise InvalidInput(f"arca cp -: the input is not a usable tar archive: {e}") from None



# -- arca cp -------------------------------------------------------------------------------------
def parse_arg(arg: str) -> tuple[str | None, str]:
    """``CONTAINER:PATH`` -> (container, path); a host path (``/x``, ``./a:b``, ``-``) ->
    (None, arg). As podman: a name before the first ``:`` without a ``/`` is a container."""
    head, sep, tail = arg.partition(":")
    if sep and head and "/" not in head and not head.startswith("."):
        return head, tail or "/"
    return None, arg


def refuse_tee(rec: ContainerRecord) -> None:
    """``arca cp`` and a TD: refused both ways (ADR 0051, docs/threat-model.md). Copying in
    would change what runs in the TD without being measured or allowed by its init-data;
    copying out could read what the TD fetched (``/run/arca``), which only the workload may."""
    if rec.tee != "none":
        raise StateError(f"container {rec.name} runs in a TD (--tee {rec.tee}): arca cp is "
                         "refused: copying in would change what runs there unmeasured, "
                         "copying out could read its secrets; give it the files in a volume "
                         "its init-data allows (policy.allow_mounts)")


class ContainerRoot:
    """The container's root directory as a descriptor: a running container's through its
    init process (``/proc/PID/root``: its mounts, volumes included, as it sees them); a
    stopped one's by mounting its overlay (image layers + its upper directory) on a private
    directory for the copy, as ``arca start`` would."""

    def __init__(self, engine: Engine, rec: ContainerRecord) -> None:
        self.engine, self.rec = engine, rec
        self.fd = -1
        self.mnt: str | None = None

    def __enter__(self) -> int:
        rec = self.rec
        if rec.is_alive():
            try:
                self.fd = os.open(f"/proc/{rec.pid}/root", _DIR & ~os.O_NOFOLLOW)
            except OSError as e:
                raise StateError(f"container {rec.name}: its root is gone ({e.strerror})"
                                 ) from None
            return self.fd
        if rec.status not in ("exited", "error"):
            raise StateError(f"container {rec.name} is {rec.display_status}: cannot copy "
                             "(arca rm a lost container)")
        from arca.host.containers.state import FileLock
        from arca.host.images.errors import ImageNotFound
        from arca.host.images.mount import mount_overlay

        images = self.engine.images
        try:
            lowers = [os.fspath(p) for p in images.lowerdirs(images.get(rec.image_digest))]
        except ImageNotFound:
            raise StateError(f"container {rec.name}: its image {rec.image} was removed"
                             ) from None
        d = os.path.abspath(self.engine.store.dir(rec.id))
        mnt = os.path.join(d, f"cp-{os.getpid()}")
        os.mkdir(mnt, 0o700)
        self.mnt = mnt
        try:
            with FileLock(os.path.join(os.fspath(images.root), "gc.lock"), shared=True):
                mount_overlay(mnt, lowers, os.path.join(d, "upper"), os.path.join(d, "work"))
            self.fd = os.open(mnt, _DIR)
        except BaseException:
            self.__exit__()
            raise
        return self.fd

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.mnt is not None:
            from arca.host.images.mount import umount

            umount(self.mnt)
            os.rmdir(self.mnt)
            self.mnt = None


def cp(engine: Engine, src: str, dst: str, stdin: IO[bytes], stdout: IO[bytes]) -> None:
    (s_ref, s_path), (d_ref, d_path) = parse_arg(src), parse_arg(dst)
    if (s_ref is None) == (d_ref is None):
        raise InvalidInput("arca cp: one of SRC and DEST must be CONTAINER:PATH, the other a "
                           "host path (or - for a tar stream)")
    rec = engine.store.find(str(s_ref or d_ref))
    refuse_tee(rec)
    with ContainerRoot(engine, rec) as root_fd:
        root = InRoot(root_fd, f"container {rec.name}")
        if s_ref is not None:
            parent, name, _ = root.resolve(s_path)
            try:
                top = src_name(s_path)
                if d_path == "-":
                    write_tar(walk_fd(parent, name), top, stdout)
                    return
                tfd, tname = host_target(d_path, top)
                try:
                    copy_tree(walk_fd(parent, name), Writer(tfd, tname, d_path))
                finally:
                    os.close(tfd)
            finally:
                os.close(parent)
            return
        if s_path == "-":
            import tempfile

            tmp = tempfile.mkdtemp(prefix="arca-cp-")  # 0700: the caller's own
            try:
                extract_tar(stdin, tmp)
                tfd, tname = container_target(root, d_path, ".")
                try:
                    copy_tree(walk_host(tmp), Writer(tfd, tname, f"container {rec.name}"))
                finally:
                    os.close(tfd)
            finally:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            return
        tfd, tname = container_target(root, d_path, src_name(s_path))
        try:
            copy_tree(walk_host(s_path), Writer(tfd, tname, f"container {rec.name}"))
        finally:
            os.close(tfd)
