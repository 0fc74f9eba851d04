"""Persistent records of ``arca run`` containers, under ``arca.host.paths.root_dir()/containers``.

One directory per container (``<id>/``: ``container.json``, ``bundle/``, ``upper/``, ``work/``,
``container.log``); ``names.json`` maps names to ids. Every change happens under the store's
lock (``lock``) and files are replaced atomically, so concurrent ``arca`` commands and the
per-container monitor never see half-written state.

States: ``created`` (bundle ready) -> ``running`` -> ``exited``; ``error`` when the runtime
refused to create or start it (the reason is kept in ``error``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from arca.host import paths
from arca.host.images.locks import locked, write_atomic
from arca.wire.errors import InvalidInput, NotFound, StateError

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_ID = re.compile(r"[0-9a-f]{64}")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    image: str
    image_digest: str
    tee: str
    args: tuple[str, ...]
    created: str
    status: str = "created"
    pid: int = 0
    monitor_pid: int = 0
    exit_code: int | None = None
    started: str | None = None
    finished: str | None = None
    auto_remove: bool = False
    detached: bool = False
    error: str | None = None
    process: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["args"] = list(self.args)
        return d

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ContainerRecord:
        obj = dict(obj)
        obj["args"] = tuple(obj.get("args", ()))
        return cls(**obj)

    def is_alive(self) -> bool:
        if self.status != "running" or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def display_status(self) -> str:
        if self.status == "running" and not self.is_alive():
            return "exited (lost)"
        if self.status == "exited":
            return f"exited ({self.exit_code})"
        return self.status


class ContainerStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.root_dir() / "containers"

    def dir(self, cid: str) -> Path:
        if not _ID.fullmatch(cid):
            raise InvalidInput(f"invalid container id {cid!r}")
        return self.root / cid

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with locked(self.root / "lock"):
            yield

    def _names(self) -> dict[str, str]:
        try:
            obj = json.loads((self.root / "names.json").read_bytes())
            return dict(obj) if isinstance(obj, dict) else {}
        except FileNotFoundError:
            return {}

    def create(self, *, name: str | None, **fields: Any) -> ContainerRecord:
        cid = secrets.token_hex(32)
        name = name or f"arca-{cid[:12]}"
        if not _NAME.fullmatch(name):
            raise InvalidInput(f"invalid container name {name!r} (letters, digits, _ . -)")
        with self.lock():
            names = self._names()
            if name in names and (self.root / names[name]).is_dir():
                raise StateError(f"container name {name!r} is already in use by "
                                 f"{names[name][:12]}")
            names[name] = cid
            rec = ContainerRecord(id=cid, name=name, created=now(), **fields)
            d = self.dir(cid)
            d.mkdir(parents=True, mode=0o700)
            write_atomic(d / "container.json", json.dumps(rec.to_json()).encode(), 0o600)
            write_atomic(self.root / "names.json", json.dumps(names).encode(), 0o600)
        return rec

    def load(self, cid: str) -> ContainerRecord:
        try:
            return ContainerRecord.from_json(
                json.loads((self.dir(cid) / "container.json").read_bytes()))
        except FileNotFoundError:
            raise NotFound(f"no such container: {cid}") from None

    def update(self, cid: str, **changes: Any) -> ContainerRecord:
        with self.lock():
            rec = replace(self.load(cid), **changes)
            write_atomic(self.dir(cid) / "container.json", json.dumps(rec.to_json()).encode(),
                         0o600)
        return rec

    def list(self) -> list[ContainerRecord]:
        out: list[ContainerRecord] = []
        if not self.root.is_dir():
            return out
        for d in self.root.iterdir():
            if _ID.fullmatch(d.name):
                with contextlib.suppress(NotFound, ValueError, TypeError, OSError):
                    out.append(self.load(d.name))
        return sorted(out, key=lambda r: r.created)

    def find(self, ref: str) -> ContainerRecord:
        """By name, full id or unique id prefix."""
        names = self._names()
        if ref in names and (self.root / names[ref]).is_dir():
            return self.load(names[ref])
        if re.fullmatch(r"[0-9a-f]{1,64}", ref):
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
            write_atomic(self.root / "names.json", json.dumps(names).encode(), 0o600)
            shutil.rmtree(d, ignore_errors=True)
