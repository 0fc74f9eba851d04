"""Persistent records of ``arca run`` containers, under ``ARCA_ROOT/containers``.

One directory per container (``<id>/``: ``container.json``, ``bundle/``, ``upper/``, ``work/``,
``container.log``); ``names.json`` maps names to ids. Every change happens under the store's
lock (``lock``) and files are replaced atomically, so concurrent ``arca`` commands and the
per-container monitor never see half-written state.

States: ``created`` (bundle ready) -> ``running`` -> ``exited``; ``error`` when the runtime
refused to create or start it (the reason is kept in ``error``).

Every ``arca run`` imports this module, so it uses nothing beyond ``os``, ``fcntl`` and the
json stand-ins of :mod:`arca._internal.fastjson`: no dataclasses, typing, pathlib, re, json, secrets
or datetime (together ~15 ms of imports, about what ``runc run`` takes to run a container).
Paths are ``str``.
"""

from __future__ import annotations

import fcntl
import os
import time

from arca._internal.fastjson import json_dumps, json_loads
from arca._internal.fsutil import write_atomic
from arca.errors import InvalidInput, NotFound, StateError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from os import PathLike
    from typing import Any

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _NAME_FIRST | frozenset("_.-")
_HEX = frozenset("0123456789abcdef")


def root_dir() -> str:
    """``arca.host.paths.root_dir()`` as a string (``paths`` imports pathlib: ~3 ms per run;
    a test keeps the two equal)."""
    return os.environ.get("ARCA_ROOT", "/var/lib/arca")


def run_dir() -> str:
    """``arca.host.paths.run_dir()`` as a string (see :func:`root_dir`)."""
    return os.environ.get("ARCA_RUN", "/run/arca-host")


def valid_name(name: str) -> bool:
    """``[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}``, without importing ``re``."""
    return 0 < len(name) <= 128 and name[0] in _NAME_FIRST and set(name) <= _NAME_CHARS


def valid_id(cid: str) -> bool:
    """64 lower-case hex digits (what :meth:`ContainerStore.create` makes)."""
    return len(cid) == 64 and set(cid) <= _HEX


def is_id_prefix(ref: str) -> bool:
    return 0 < len(ref) <= 64 and set(ref) <= _HEX


def now() -> str:
    """UTC now, as ``datetime.now(UTC).isoformat(timespec="milliseconds")`` writes it."""
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac // 1_000_000:03d}+00:00"




class FileLock:
    """``flock`` on a file, released on exit: the protocol of ``arca.host.images.locks``
    (which imports pathlib and contextlib), so both interlock."""

    __slots__ = ("path", "fd", "shared")

    def __init__(self, path: str, *, shared: bool = False) -> None:
        self.path = path
        self.fd = -1
        self.shared = shared

    def __enter__(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing releases the lock
        self.fd = -1


_REQ = object()  # marks a field without default
#: The fields of a record, in order, with their defaults (``dict``: a new empty dict).
_FIELDS: dict[str, Any] = {
    "id": _REQ, "name": _REQ, "image": _REQ, "image_digest": _REQ, "tee": _REQ, "args": _REQ,
    "created": _REQ, "status": "created", "pid": 0, "monitor_pid": 0, "exit_code": None,
    "started": None, "finished": None, "auto_remove": False, "detached": False, "error": None,
    "process": dict, "tty": False, "interactive": False, "paused": False,
    "restart_policy": "no", "restart_count": 0, "manual_stop": False,
}
_REQUIRED = tuple(k for k, v in _FIELDS.items() if v is _REQ)


class ContainerRecord:
    """One container's record: immutable; :meth:`replace` makes a changed copy."""

    __slots__ = tuple(_FIELDS)
    id: str
    name: str
    image: str
    image_digest: str
    tee: str
    args: tuple[str, ...]
    created: str
    status: str
    pid: int
    monitor_pid: int
    exit_code: int | None
    started: str | None
    finished: str | None
    auto_remove: bool
    detached: bool
    error: str | None
    process: dict[str, Any]
    tty: bool  # the process has a pseudo-terminal (-t)
    interactive: bool  # the foreground process reads arca run's stdin (-i)
    paused: bool  # frozen by arca pause (runc pause), until arca unpause
    restart_policy: str  # --restart: no | on-failure[:N] | always | unless-stopped
    restart_count: int  # times its monitor ran it again (podman's RestartCount)
    manual_stop: bool  # `arca stop`/`rm -f` ended it: the restart policy must not undo that

    def __init__(self, **fields: Any) -> None:
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise TypeError(f"unknown container record field(s) {sorted(unknown)}")
        missing = [k for k in _REQUIRED if k not in fields]
        if missing:
            raise TypeError(f"container record lacks {missing}")
        for k, default in _FIELDS.items():
            v = fields[k] if k in fields else default() if default is dict else default
            object.__setattr__(self, k, tuple(v) if k == "args" else v)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ContainerRecord is immutable (use replace): {name}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContainerRecord) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"ContainerRecord({self.to_json()!r})"

    def replace(self, **changes: Any) -> ContainerRecord:
        return ContainerRecord(**{**{k: getattr(self, k) for k in _FIELDS}, **changes})

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _FIELDS}
        d["args"] = list(self.args)
        d["process"] = json_loads(json_dumps(self.process))  # a deep copy, as asdict made
        return d

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ContainerRecord:
        return cls(**obj)

    def is_alive(self) -> bool:
        from arca._internal.procs import pid_alive

        return self.status == "running" and pid_alive(self.pid)

    @property
    def display_status(self) -> str:
        if self.status == "running" and not self.is_alive():
            return "exited (lost)"
        if self.status == "exited":
            return f"exited ({self.exit_code})"
        return "paused" if self.status == "running" and self.paused else self.status


class ContainerStore:
    def __init__(self, root: str | PathLike[str] | None = None) -> None:
        self.root = os.fspath(root) if root is not None else os.path.join(root_dir(),
                                                                          "containers")

    def dir(self, cid: str) -> str:
        if not valid_id(cid):
            raise InvalidInput(f"invalid container id {cid!r}")
        return os.path.join(self.root, cid)

    def lock(self) -> FileLock:
        return FileLock(os.path.join(self.root, "lock"))

    def _names(self) -> dict[str, str]:
        try:
            with open(os.path.join(self.root, "names.json"), "rb") as f:
                obj = json_loads(f.read())
        except FileNotFoundError:
            return {}
        except ValueError:
            obj = None
        if isinstance(obj, dict) and all(isinstance(v, str) for v in obj.values()):
            return obj
        # Unreadable (written without fsync, then a host crash): the records say it too.
        return {r.name: r.id for r in self.list()}

    def create(self, *, name: str | None, **fields: Any) -> ContainerRecord:
        cid = os.urandom(32).hex()
        name = name or f"arca-{cid[:12]}"
        if not valid_name(name):
            raise InvalidInput(f"invalid container name {name!r} (letters, digits, _ . -)")
        with self.lock():
            names = self._names()
            if name in names and os.path.isdir(os.path.join(self.root, names[name])):
                raise StateError(f"container name {name!r} is already in use by "
                                 f"{names[name][:12]}")
            names[name] = cid
            rec = ContainerRecord(id=cid, name=name, created=now(), **fields)
            # The directory appears with its record in it (rename), never without.
            new = os.path.join(self.root, f".new-{cid}")
            os.mkdir(new, 0o700)
            _write_record(os.path.join(new, "container.json"), rec)
            os.rename(new, self.dir(cid))
            write_atomic(os.path.join(self.root, "names.json"), json_dumps(names).encode(),
                         0o600, durable=False)
        return rec

    def load(self, cid: str) -> ContainerRecord:
        try:
            with open(os.path.join(self.dir(cid), "container.json"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise NotFound(f"no such container: {cid}") from None
        try:
            return ContainerRecord.from_json(json_loads(data))
        except (ValueError, TypeError, AttributeError):
            return _unreadable(cid)

    def update(self, cid: str, check: Callable[[ContainerRecord], None] | None = None,
               **changes: Any) -> ContainerRecord:
        """Change the record; ``check`` (raising to refuse) sees it first, under the lock."""
        with self.lock():
            rec = self.load(cid)
            if check is not None:
                check(rec)
            rec = rec.replace(**changes)
            _write_record(os.path.join(self.dir(cid), "container.json"), rec)
        return rec

    def list(self) -> list[ContainerRecord]:
        out: list[ContainerRecord] = []
        try:
            names = os.listdir(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return out
        for n in names:
            if valid_id(n):
                try:
                    out.append(self.load(n))
                except (NotFound, ValueError, TypeError, OSError):
                    pass
        return sorted(out, key=lambda r: r.created)

    def find(self, ref: str) -> ContainerRecord:
        """By name, full id or unique id prefix."""
        names = self._names()
        if ref in names and os.path.isdir(os.path.join(self.root, names[ref])):
            return self.load(names[ref])
        if is_id_prefix(ref):
            hits = [r for r in self.list() if r.id.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise InvalidInput(f"container id prefix {ref!r} is ambiguous")
        raise NotFound(f"no such container: {ref}")

    def delete(self, cid: str) -> None:
        with self.lock():
            d = self.dir(cid)
            names = {k: v for k, v in self._names().items() if v != cid}
            write_atomic(os.path.join(self.root, "names.json"), json_dumps(names).encode(),
                         0o600, durable=False)
            remove_tree(d)


def _write_record(path: str, rec: ContainerRecord) -> None:
    """Atomic, not durable: fsync costs 2-10 ms per write on this class of disk, a run
    writes its record four times, and the record of a container is only worth as much as the
    container, which a host crash ends anyway. What a crash can leave (on file systems that
    do not order a rename after its data) is an unreadable record: :meth:`ContainerStore.load`
    turns it into an ``error`` record that ``arca rm`` removes, and ``names.json`` is rebuilt
    from the records."""
    write_atomic(path, json_dumps(rec.to_json()).encode(), 0o600, durable=False)


def _unreadable(cid: str) -> ContainerRecord:
    return ContainerRecord(id=cid, name=f"arca-{cid[:12]}", image="?", image_digest="?",
                           tee="none", args=(), created="", status="error",
                           error="its record is unreadable (host crash?): remove it")


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything below it, ignoring errors, never following symlinks
    (what ``shutil.rmtree(path, ignore_errors=True)`` does; shutil costs ~2 ms of imports).
    Called once the container's processes are gone, so nothing changes the tree meanwhile."""
    try:
        entries = os.scandir(path)
    except NotADirectoryError:
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    except OSError:
        return
    with entries:
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    remove_tree(e.path)
                else:
                    os.unlink(e.path)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass
