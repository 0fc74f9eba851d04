"""A user namespace per TD: its workload runs under host uids nobody else has (issue 13, item 2).

On ``sim`` a TD's processes run on the host kernel. Without a user namespace a workload of uid
1000 is host uid 1000, and any local user of that uid passes ``ptrace_may_access`` and reads the
TD's ``/proc/<pid>/environ`` (env secrets) and ``/proc/<pid>/root/run/arca/secrets``. So every
TD container gets a user namespace mapping its uids and gids 0-65535 to a range of 65,536 host
ids that Arca allocated to it alone (ADR 0048):

* **Ranges** are slots of ``SIZE`` ids from ``BASE`` (0x70000000 = 1,879,048,192): above
  ``useradd``'s ``/etc/subuid`` allocations (100,000-600,100,000) and systemd-nspawn's
  container ranges (524,288-1,879,048,191), below systemd's mountfsd range (0x7FFE0000) and
  the ids tools read as negative (2^31 and up): ``SLOTS`` = 4,094 TDs at once. A slot is the
  directory ``REGISTRY/<slot>``, taken by an atomic ``rename`` of a directory holding its
  owner (the container's Arca state directory); machine-wide, not per ``ARCA_RUN``, because
  uids are. Released at delete; a slot whose owner no longer exists (a crash, a test's
  deleted tree) is reclaimed when met. Never two owners: ``rename`` onto a non-empty
  directory fails.
* **Files** keep their owners: runc 1.1 has no id-mapped mounts, so the runtime gives runc a
  root it mounted itself, ``REGISTRY/<slot>/rootfs``, through id-mapped mounts (Linux 5.19+):
  a directory rootfs is bind-mounted with the TD's mapping; an overlay rootfs (containerd's
  snapshot, ``arca run``'s layers) is mounted again from id-mapped lower and upper layers, the
  orchestrator's own mount detached first so the upper directory has one user. What the image
  says is uid 0 or 1000 is uid 0 or 1000 inside, and what the workload writes is stored with
  its in-container ids, as without a user namespace: nothing is copied or chowned. The
  registry directories are traversable (0711) because runc resolves the root path from inside
  the user namespace; each slot directory is its range root's, 0700, so no local user reaches
  the image's setuid files and device nodes below it.

What it does not do: map a TD's uids above 65,535 (refused at create); make host files of a
bind mount (volumes, ``/etc/hosts``) owned inside (they show as ``nobody``: readable when
world-readable, writable when world-writable); isolate non-TD containers (podman's rootful
default, unchanged).
"""

from __future__ import annotations

import ctypes
import errno
import os

from arca._internal.fsutil import remove_if_present
from arca.errors import ArcaError, InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: First host id of slot 0 (see the module docstring for why here).
BASE = 0x7000_0000
#: Ids per TD: in-container 0-65535, as podman's and Kubernetes' user namespaces.
SIZE = 65536
#: Slots below systemd's mountfsd range 0x7FFE0000.
SLOTS = (0x7FFE_0000 - BASE) // SIZE
#: Machine-wide: uids are (tests with their own ``ARCA_RUN`` must not get the same range).
REGISTRY = "/run/arca-userns"
OWNER = "owner"
ROOTFS = "rootfs"
#: A slot's user namespace, kept (an nsfs bind mount) when it was made before the container:
#: ``arca run`` makes the TD's network namespace in it (see :func:`reserve`).
USERNS = "userns"

_libc = ctypes.CDLL(None, use_errno=True)
_OPEN_TREE, _MOVE_MOUNT, _MOUNT_SETATTR = 428, 429, 442  # the same on x86-64 and arm64
_OPEN_TREE_CLONE, _O_CLOEXEC, _AT_EMPTY_PATH = 1, 0o2000000, 0x1000
_MOUNT_ATTR_IDMAP, _MOVE_MOUNT_F_EMPTY_PATH, _AT_FDCWD, _MNT_DETACH = 0x100000, 4, -100, 2
_CLONE_NEWUSER, _MS_BIND, _NS_GET_USERNS = 0x10000000, 4096, 0xB701


class UsernsError(ArcaError):
    """A TD's user namespace could not be set up (no free range, a rootfs that cannot be
    id-mapped)."""


def host_id(slot: int) -> int:
    return BASE + slot * SIZE


# -- the registry of ranges --------------------------------------------------------------------


def allocate(owner: str, registry: str = REGISTRY, note: Any = None) -> int:
    """A free slot, now ``owner``'s (an absolute path that exists while it is in use).
    ``note(slot)`` is called before each attempt, so a caller killed at any point has
    recorded the slot it may hold."""
    os.makedirs(registry, 0o711, exist_ok=True)
    os.chmod(registry, 0o711)  # noqa: S103 - runc resolves REGISTRY/<slot>/rootfs in the userns
    new = os.path.join(registry, f".new-{os.getpid()}-{os.urandom(6).hex()}")
    os.mkdir(new)
    os.chmod(new, 0o711)  # noqa: S103 - as the registry (umask aside)
    with open(os.path.join(new, OWNER), "w", encoding="utf-8") as f:
        f.write(owner)
    import zlib

    first = zlib.crc32(owner.encode()) % SLOTS  # spread owners: fewer probes on a busy node
    try:
        for i in range(SLOTS):
            slot = (first + i) % SLOTS
            path = os.path.join(registry, str(slot))
            for _ in range(2):  # the second time after reclaiming a stale slot
                if note is not None:
                    note(slot)
                try:
                    os.rename(new, path)
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not _reclaim(path):
                        break
                    continue
                # Only the range's root (runc in the TD's user namespace) and host root pass:
                # the TD's root below holds the image's setuid files and device nodes, which
                # no local user may reach (issue 13 item 12).
                os.chown(path, host_id(slot), host_id(slot))
                os.chmod(path, 0o700)
                return slot
        raise UsernsError(f"no free uid range for a TD: all {SLOTS} ranges of {REGISTRY} are "
                          "in use")
    finally:
        if os.path.exists(new):
            _remove(new)


def owner_of(slot: int, registry: str = REGISTRY) -> str | None:
    try:
        with open(os.path.join(registry, str(slot), OWNER), encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _reclaim(path: str) -> bool:
    """Take back a slot whose owner is gone; ``True`` when the slot is free now."""
    try:
        with open(os.path.join(path, OWNER), encoding="utf-8") as f:
            owner = f.read()
    except FileNotFoundError:
        owner = ""  # half-released (owner removed last but one): free it
    except OSError:
        return False
    if owner and os.path.exists(owner):
        return False
    trash = f"{path}.stale-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        os.rename(path, trash)  # one reclaimer wins; the others see the slot free or taken
    except OSError:
        return not os.path.exists(path)
    _remove(trash)
    return True


def release(slot: int, owner: str, registry: str = REGISTRY) -> None:
    """Unmount the slot's rootfs and free it, if ``owner`` holds it (idempotent)."""
    path = os.path.join(registry, str(slot))
    if owner_of(slot, registry) != owner:
        return
    _remove(path)


def _remove(path: str) -> None:
    """Unmount and remove a slot's mounts and files (lazily: a dying TD may still hold them;
    EINVAL where nothing is mounted is fine)."""
    unmount_root(path)
    ns = os.path.join(path, USERNS)
    _libc.umount2(os.fsencode(ns), _MNT_DETACH)
    remove_if_present(ns)
    remove_if_present(os.path.join(path, OWNER))
    remove_if_present(path, directory=True)


def unmount_root(path: str) -> None:
    """Unmount and remove the TD root of the slot directory ``path`` (not the slot)."""
    layers = os.path.join(path, "layers")
    mounts = [os.path.join(layers, n) for n in _listdir(layers)]
    for d in (os.path.join(path, ROOTFS), *mounts):
        _libc.umount2(os.fsencode(d), _MNT_DETACH)
    for d in (*mounts, layers, os.path.join(path, ROOTFS)):
        remove_if_present(d, directory=os.path.isdir(d))


def reserve(owner: str) -> int:
    """A slot for ``owner`` whose user namespace is kept at ``REGISTRY/<slot>/userns``, for a
    network namespace made before the container (``arca run``'s pasta namespace): it must be
    owned by the TD's user namespace, or runc 1.1's ``exec`` (user namespace joined first)
    cannot enter it. The runtime's create finds the slot from the network namespace."""
    slot = allocate(owner)
    try:
        nsfd = userns_fd(host_id(slot))
        try:
            path = os.path.join(REGISTRY, str(slot), USERNS)
            with open(path, "x"):
                pass
            if _libc.mount(f"/proc/self/fd/{nsfd}".encode(), os.fsencode(path), None, _MS_BIND,
                           None) != 0:
                e = ctypes.get_errno()
                raise UsernsError(f"cannot keep a TD's user namespace: {os.strerror(e)}")
        finally:
            os.close(nsfd)
    except BaseException:
        release(slot, owner)
        raise
    return slot


def slot_of_netns(netns: str, registry: str = REGISTRY) -> int | None:
    """The slot whose kept user namespace owns the network namespace ``netns``, or ``None``."""
    import fcntl

    try:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        ufd = fcntl.ioctl(fd, _NS_GET_USERNS)
    except OSError:
        return None  # owned by a namespace we cannot see (the host's): not one of ours
    finally:
        os.close(fd)
    try:
        st = os.fstat(ufd)
    finally:
        os.close(ufd)
    for name in _listdir(registry):
        if name.isdigit():
            try:
                kept = os.stat(os.path.join(registry, name, USERNS))
            except OSError:
                continue
            if (kept.st_dev, kept.st_ino) == (st.st_dev, st.st_ino):
                return int(name)
    return None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


# -- id-mapped mounts ---------------------------------------------------------------------------


#: ``clone`` system call numbers (its argument order differs too, but only ``flags`` is used).
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}
_PR_SET_PDEATHSIG = 1
#: Killed helpers not reaped yet (reaped on the next call; a short-lived runtime's go to init).
_unreaped: list[int] = []


def userns_fd(host: int, size: int = SIZE) -> int:
    """An fd of a new user namespace mapping ids 0..size-1 to ``host``.. (for
    ``MOUNT_ATTR_IDMAP``). A child is *born* in it (``clone(CLONE_NEWUSER)``): its maps can be
    written and its namespace opened at once, without waiting for the child to run (a forked
    child that unshares costs ~12 ms of scheduling on a loaded host); it only pauses until it is
    killed. ``PyDLL``: the child returns from the call holding the interpreter lock, so it runs
    nothing but the ``pause``. It dies with its parent too (``PR_SET_PDEATHSIG``): a runtime
    killed (``kill -9``) between the clone and the kill below would otherwise leave it paused
    for ever, a copy of the runtime with the container's id on its command line."""
    import signal

    _reap()
    py = ctypes.PyDLL(None, use_errno=True)
    parent = os.getpid()
    pid = int(py.syscall(_SYS_CLONE[os.uname().machine], _CLONE_NEWUSER | signal.SIGCHLD,
                         0, 0, 0, 0))
    if pid == 0:  # pragma: no cover - the child: never runs the parent's code
        try:
            py.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before that call
                os._exit(0)
            while True:
                py.pause()
        finally:  # a signal's Python handler raised (Ctrl-C to the process group)
            os._exit(0)
    if pid < 0:
        e = ctypes.get_errno()
        raise UsernsError(f"cannot create a user namespace: {os.strerror(e)}")
    try:
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w", encoding="ascii") as f:
                f.write(f"0 {host} {size}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.kill(pid, signal.SIGKILL)
        _unreaped.append(pid)
        _reap()


def _reap() -> None:
    for pid in list(_unreaped):
        try:
            done = os.waitpid(pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            done = True
        if done:
            _unreaped.remove(pid)


def _sys(nr: int, *args: Any) -> int:
    r = int(_libc.syscall(nr, *args))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def idmapped_bind(source: str, target: str, nsfd: int) -> None:
    """Bind ``source`` (not its submounts) at ``target``, ids shifted by ``nsfd``'s mapping."""
    fd = _sys(_OPEN_TREE, _AT_FDCWD, os.fsencode(source), _OPEN_TREE_CLONE | _O_CLOEXEC)
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, nsfd)
        _sys(_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))
        _sys(_MOVE_MOUNT, fd, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(fd)


def mount_rootfs(rootfs: str, slot_dir: str, host: int, nsfd: int) -> str:
    """The TD's root as its user namespace must see it, mounted at ``slot_dir/rootfs``."""
    from arca.host.treedigest import overlay_options

    target = os.path.join(slot_dir, ROOTFS)
    os.mkdir(target, 0o700)
    opts = overlay_options(rootfs)
    try:
        if opts is None:
            idmapped_bind(rootfs, target, nsfd)
            return target
        lowers, upper, work, rest = _layers(opts)
        layers = os.path.join(slot_dir, "layers")
        os.mkdir(layers, 0o700)
        mapped = []
        for i, d in enumerate(lowers):
            m = os.path.join(layers, str(i))
            os.mkdir(m, 0o700)
            idmapped_bind(d, m, nsfd)
            mapped.append(m)
        # The upper layer is not id-mapped: overlayfs writes its work directory and copies up
        # as the mounter (host root), which an id-mapped mount cannot represent. The TD's
        # writes are stored shifted; what an earlier TD of this container wrote is shifted to
        # this range first (``arca start`` of a stopped TD).
        if upper is not None:
            _reshift(upper, host)
        # The orchestrator's mount goes first: two overlays on one upper directory are
        # undefined (and refused with index=on). It unmounts the path later and finds nothing.
        _libc.umount2(os.fsencode(rootfs), _MNT_DETACH)
        try:
            if work is not None and any(o in ("volatile", "fsync=volatile") for o in rest):
                # The mount we just detached was running: its volatile marker is not a crash's.
                _rmtree(os.path.join(work, "work", "incompat"))
            _mount_overlay(target, mapped, upper, work, rest)
        except OSError:
            _mount_overlay(rootfs, lowers, upper, work, rest)  # give it back as it was
            raise
        for m in mapped:
            _libc.umount2(os.fsencode(m), _MNT_DETACH)  # the overlay holds its own clones
    except OSError as e:
        raise UsernsError(f"cannot id-map the TD's rootfs {rootfs} for its user namespace: "
                          f"{e.strerror}") from None
    return target


def _reshift(upper: str, host: int) -> None:
    """Entries of ``upper`` owned by another TD range (an earlier run of this container) are
    given the same ids in ``host``'s range; anything else is left as it is."""
    def shift(i: int) -> int:
        return host + (i - BASE) % SIZE if BASE <= i < BASE + SLOTS * SIZE else i

    st = os.lstat(upper)  # the merged root's owner: the image's root (0) is the range's first
    if st.st_uid < SIZE and st.st_gid < SIZE:
        os.chown(upper, host + st.st_uid, host + st.st_gid)
    for d, dirs, files in os.walk(upper):
        for name in (*dirs, *files):
            p = os.path.join(d, name)
            st = os.lstat(p)
            if (shift(st.st_uid), shift(st.st_gid)) != (st.st_uid, st.st_gid):
                os.lchown(p, shift(st.st_uid), shift(st.st_gid))


def _rmtree(path: str) -> None:
    for d, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(d, name))
        for name in dirs:
            os.rmdir(os.path.join(d, name))
    if os.path.isdir(path):
        os.rmdir(path)


def _mount_overlay(target: str, lowers: list[str], upper: str | None, work: str | None,
                   rest: list[str]) -> None:
    def _escape(p: str) -> str:  # overlayfs separates lowerdirs with ':', options with ','
        return p.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")

    data = ",".join([f"lowerdir={':'.join(_escape(p) for p in lowers)}",
                     *([f"upperdir={_escape(upper)}", f"workdir={_escape(work)}"]
                       if upper and work else []), *rest])
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0 if upper else 1,
                   data.encode()) != 0:  # 1: MS_RDONLY, an overlay without an upper layer
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _layers(opts: list[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    from arca.host.treedigest import split_lowerdirs

    lowers: list[str] = []
    upper = work = None
    rest = []
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "lowerdir":
            lowers += split_lowerdirs(value)
        elif key in ("lowerdir+", "datadir+"):
            lowers.append(value)
        elif key == "upperdir":
            upper = value
        elif key == "workdir":
            work = value
        elif key not in ("rw", "ro"):
            rest.append(opt)
    for d in lowers:
        if not os.path.isabs(d):
            raise UsernsError(f"the TD's rootfs overlay names layer {d!r} relative to a "
                              "directory Arca cannot know; it cannot be id-mapped")
    return lowers, upper, work, rest


# -- the OCI config ---------------------------------------------------------------------------


def isolate(config: dict[str, Any], host: int, root: str, userns: str | None = None
            ) -> dict[str, Any]:
    """``config`` with a new user namespace mapping 0..SIZE-1 to ``host``.., ``root`` as its
    root, and sysfs bound from the host where the TD joins a network namespace it does not own
    (mounting sysfs needs one its user namespace owns; runc 1.1 fails with EPERM)."""
    linux = config.setdefault("linux", {})
    nss = linux.get("namespaces") or []
    if any(n.get("type") == "user" for n in nss) or linux.get("uidMappings") \
            or linux.get("gidMappings"):
        raise InvalidInput("a TD container gets its own user namespace from Arca (issue 13 "
                           "item 2); the bundle's user namespace or id mappings are refused")
    proc = config.get("process") or {}
    user = proc.get("user") or {}
    for key in ("uid", "gid"):
        if int(user.get(key, 0)) >= SIZE:
            raise InvalidInput(f"process.user.{key} {user[key]} is not mapped in a TD's user "
                               f"namespace (ids 0-{SIZE - 1})")
    for g in user.get("additionalGids") or ():
        if int(g) >= SIZE:
            raise InvalidInput(f"process.user.additionalGids {g} is not mapped in a TD's user "
                               f"namespace (ids 0-{SIZE - 1})")
    linux["namespaces"] = [*nss, {"type": "user", **({"path": userns} if userns else {})}]
    linux["uidMappings"] = [{"containerID": 0, "hostID": host, "size": SIZE}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": host, "size": SIZE}]
    config.setdefault("root", {})["path"] = root
    net = next((n for n in nss if n.get("type") == "network"), None)
    if net is None or net.get("path"):
        for m in config.get("mounts") or ():
            if m.get("destination") == "/sys" and m.get("type") == "sysfs":
                m.update(type="bind", source="/sys",
                         options=["rbind", "nosuid", "noexec", "nodev", "ro"])
    ipc = next((n for n in nss if n.get("type") == "ipc"), None)
    if ipc is None or ipc.get("path"):
        # Likewise mqueue needs an IPC namespace of its own (a pod's sandbox IPC is not):
        # /dev/mqueue stays an empty directory rather than show the host's queues.
        config["mounts"] = [m for m in config.get("mounts") or ()
                            if not (m.get("type") == "mqueue" and m.get("destination")
                                    == "/dev/mqueue")]
    return config


# -- a TD container's ---------------------------------------------------------------------------

#: Beside the container's ``state.json``: the slot of its range (what delete releases).
SLOT_FILE = "userns-slot"


def isolate_td(cid: str, config: dict[str, Any], rootfs: str, td_dir: str) -> dict[str, Any]:
    """Give the TD ``cid`` (Arca state recorded) its range, its id-mapped root and the TD
    directory's ``go`` FIFO (the agent runs as the range's first id); ``config`` rewritten.
    A TD joining a network namespace made in a reserved slot's user namespace (``arca run``)
    joins that slot; otherwise it gets a slot of its own. What was done is recorded first, so
    :func:`release_td` undoes any prefix of it."""
    from arca.host.runtime import state as st

    owner = str(st.state_path(cid).parent)
    record = st.state_path(cid).parent / SLOT_FILE
    nss = (config.get("linux") or {}).get("namespaces") or []
    net = next((n.get("path") for n in nss if n.get("type") == "network" and n.get("path")),
               None)
    slot = slot_of_netns(net) if net else None
    kept = None
    if slot is not None:
        holder = owner_of(slot)
        if not holder or not os.path.exists(holder):
            raise UsernsError(f"the network namespace {net} belongs to a released uid range")
        st.write_atomic(record, f"{slot} borrowed".encode())
        kept = os.path.join(REGISTRY, str(slot), USERNS)
    else:
        slot = allocate(owner, note=lambda k: st.write_atomic(record, str(k).encode()))
    host = host_id(slot)
    new = isolate(config, host, os.path.join(REGISTRY, str(slot), ROOTFS), kept)
    os.chown(os.path.join(td_dir, st.GO_FIFO), host, host)
    nsfd = os.open(kept, os.O_RDONLY | os.O_CLOEXEC) if kept else userns_fd(host)
    try:
        mount_rootfs(rootfs, os.path.join(REGISTRY, str(slot)), host, nsfd)
        _map_binds(new, os.path.join(REGISTRY, str(slot), "layers"), nsfd)
    finally:
        os.close(nsfd)
    return new


def _map_binds(config: dict[str, Any], layers: str, nsfd: int) -> None:
    """Host files and directories bind-mounted into the TD (volumes, ``/etc/hosts``,
    ``resolv.conf``) keep their owners inside, as without a user namespace: each source is
    bound id-mapped under the slot and the mount points there. Arca's own mounts (the TD
    directory, the guest runtime), kernel trees, and sources whose filesystem cannot be
    id-mapped stay as they are (their files show as ``nobody``)."""
    from arca.wire.constants import GUEST_RUNTIME_MOUNT, SIM_DEVICE_DIR

    os.makedirs(layers, 0o700, exist_ok=True)
    for i, m in enumerate(config.get("mounts") or ()):
        dest, src = str(m.get("destination", "")), m.get("source")
        if m.get("type") not in ("bind", "none") or not isinstance(src, str) \
                or dest in (GUEST_RUNTIME_MOUNT, SIM_DEVICE_DIR) \
                or any(src == t or src.startswith(t + "/") for t in ("/proc", "/sys", "/dev")):
            continue
        target = os.path.join(layers, f"bind{i}")
        try:
            if os.path.isdir(src):
                os.mkdir(target, 0o700)
            else:
                with open(target, "x"):
                    pass
            idmapped_bind(src, target, nsfd)
        except OSError:
            continue  # not id-mappable (or gone): runc binds the source itself, unmapped
        m["source"] = target


def release_td(cid: str) -> None:
    """Unmount the TD's root and free its range (a borrowed one stays its holder's);
    idempotent; nothing recorded: nothing."""
    from arca.host.runtime import state as st

    record = st.state_path(cid).parent / SLOT_FILE
    try:
        slot_s, _, how = record.read_text().partition(" ")
        slot = int(slot_s)
    except (OSError, ValueError):
        return
    if how == "borrowed":
        unmount_root(os.path.join(REGISTRY, str(slot)))
    else:
        release(slot, str(record.parent))
    record.unlink(missing_ok=True)
