"""Arca's own per-container state on the host, beside runc's.

``<run_dir>/containers/<id>/state.json`` records what ``create`` did for a TEE container (so
``delete`` knows what to undo even after a crash half-way), and ``<run_dir>/td/<id>/`` is the
TD's device directory bind-mounted into the container. Ids are validated before they touch a
path; files are written atomically. Containers without a TEE have no Arca state at all.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
from dataclasses import asdict, dataclass
from typing import Any

from arca.host import paths
from arca.wire.errors import InvalidInput, StateError

#: runc accepts ``[\w+-.]+``; we additionally refuse ``.``/``..`` and overly long ids because
#: ids become path components.
_ID_RE = re.compile(r"[A-Za-z0-9_+\-.]{1,128}")


def validate_id(container_id: str) -> str:
    if not _ID_RE.fullmatch(container_id) or container_id in (".", ".."):
        raise InvalidInput(f"invalid container id {container_id!r}")
    return container_id


def containers_dir() -> pathlib.Path:
    return paths.run_dir() / "containers"


def td_root() -> pathlib.Path:
    return paths.run_dir() / "td"


def td_dir(container_id: str) -> pathlib.Path:
    return td_root() / validate_id(container_id)


def state_path(container_id: str) -> pathlib.Path:
    return containers_dir() / validate_id(container_id) / "state.json"


@dataclass(frozen=True)
class ContainerState:
    id: str
    tee: str
    bundle: str
    #: ``creating`` until runc create succeeded, then ``created``; delete handles both.
    status: str
    measurement: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def write_atomic(path: pathlib.Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_private_dir(path: pathlib.Path, mode: int = 0o700) -> None:
    path.mkdir(mode=mode, parents=True, exist_ok=True)


def save(state: ContainerState) -> None:
    p = state_path(state.id)
    ensure_private_dir(p.parent.parent)
    p.parent.mkdir(mode=0o700, exist_ok=True)
    write_atomic(p, json.dumps(state.to_json()).encode())


def load(container_id: str) -> ContainerState | None:
    """The Arca state of a container, or ``None`` when Arca did nothing for it."""
    try:
        raw = state_path(container_id).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return ContainerState(**json.loads(raw))
    except (ValueError, TypeError) as e:
        raise StateError(f"Arca state of container {container_id} is corrupt: {e}") from None


def remove(container_id: str) -> None:
    """Remove every host file Arca keeps for the container (idempotent)."""
    shutil.rmtree(td_dir(container_id), ignore_errors=True)
    shutil.rmtree(state_path(container_id).parent, ignore_errors=True)
