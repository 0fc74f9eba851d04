"""Arca's own per-container state on the host, beside runc's.

``<run_dir>/containers/<id>/state.json`` records what ``create`` did for a TEE container (so
``delete`` knows what to undo even after a crash half-way), and ``<run_dir>/td/<id>/`` is the
TD's device directory bind-mounted into the container. Ids are validated before they touch a
path; files are written atomically. Containers without a TEE have no Arca state at all.

Deliberately plain (no dataclasses, no regular expressions, no shutil): ``delete`` of every
TEE container imports this module, and each of those imports costs milliseconds per container.
"""

from __future__ import annotations

import json
import os
import pathlib

from arca._internal.fsutil import remove_if_present
from arca._internal.fsutil import write_atomic as _write_atomic
from arca.errors import InvalidInput, StateError
from arca.host import paths

TYPE_CHECKING = False  # ``typing`` costs ~3 ms per arca-runtime call; annotations are strings
if TYPE_CHECKING:
    from typing import Any

#: runc accepts ``[\w+-.]+``; we keep to ASCII, refuse ``.``/``..`` and ids over 128 chars,
#: because ids become path components.
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-.")
MAX_ID_LENGTH = 128


def validate_id(container_id: str) -> str:
    if (not isinstance(container_id, str) or not 0 < len(container_id) <= MAX_ID_LENGTH
            or not _ID_CHARS.issuperset(container_id) or container_id in (".", "..")):
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


#: The FIFO in the TD directory the agent waits on after its work (ADR 0003, docs/guest.md):
#: ``create`` starts the agent at once, ``start`` writes one byte to it.
GO_FIFO = "go"
#: Beside ``state.json``: ``start`` has released the agent (created with O_EXCL by ``start``).
RELEASED = "released"


#: Beside ``state.json``: the runc ``--root`` the container was created under. The same id
#: under another root (another containerd namespace) is another container, never this TD.
RUNC_ROOT = "runc-root"
DEFAULT_RUNC_ROOT = "/run/runc"


def runc_root(globals_: dict[str, str | bool]) -> str:
    root = globals_.get("root")
    return root if isinstance(root, str) and root else DEFAULT_RUNC_ROOT


def record_root(container_id: str, root: str) -> None:
    write_atomic(state_path(container_id).parent / RUNC_ROOT, root.encode())


def belongs_to(container_id: str, root: str) -> bool:
    """The Arca state of ``container_id`` is that of the container under runc ``root`` (no
    root recorded yet: a create in flight, ours)."""
    try:
        return (state_path(container_id).parent / RUNC_ROOT).read_bytes() == root.encode()
    except FileNotFoundError:
        return True


def go_path(container_id: str) -> pathlib.Path:
    return td_dir(container_id) / GO_FIFO


def released_path(container_id: str) -> pathlib.Path:
    return state_path(container_id).parent / RELEASED


def unreleased(container_id: str) -> bool:
    """Prestarted (the agent runs, waiting on ``go``) and not yet released by ``start``."""
    return go_path(container_id).exists() and not released_path(container_id).exists()


class ContainerState:
    """What Arca did for one TEE container. ``status`` is ``creating`` until ``runc create``
    (and the agent's prestart) succeeded, then ``created`` — also once running: runc keeps
    that part; ``released`` beside it says ``start`` came. ``delete`` handles both."""

    __slots__ = ("id", "tee", "bundle", "status", "measurement")
    FIELDS = ("id", "tee", "bundle", "status", "measurement")

    def __init__(self, id: str, tee: str, bundle: str, status: str,  # noqa: A002
                 measurement: str = "") -> None:
        self.id, self.tee, self.bundle = id, tee, bundle
        self.status, self.measurement = status, measurement

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContainerState) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"ContainerState({self.to_json()!r})"


def write_atomic(path: pathlib.Path, data: bytes, mode: int = 0o600, *,
                 durable: bool = False) -> None:
    """Write-then-rename, so readers see the old or the new file, never a torn one.

    ``durable`` adds an fsync. Run-directory state lives on tmpfs and dies with the host, so
    it skips the fsync (several per container on the hot path); persistent state wants it.
    """
    _write_atomic(path, data, mode, durable=durable)


def ensure_private_dir(path: pathlib.Path, mode: int = 0o700) -> None:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    # mkdir keeps the mode of an existing directory (e.g. one made by an older version).
    os.chmod(path, mode)


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
        obj = json.loads(raw)
        return ContainerState(**{k: str(obj[k]) for k in ContainerState.FIELDS})
    except (ValueError, TypeError, KeyError) as e:
        raise StateError(f"Arca state of container {container_id} is corrupt: {e}") from None


def _remove_tree(path: pathlib.Path) -> None:
    """Remove a directory of files (what Arca keeps per container); deeper trees via shutil."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            import shutil

            shutil.rmtree(e.path, ignore_errors=True)
        else:
            remove_if_present(e.path)
    remove_if_present(path, directory=True)


def remove_half_made(container_id: str) -> None:
    """A state directory without ``state.json``: a create killed inside its first state write
    (``save`` is its first side effect), so there is nothing else to undo."""
    try:
        d = state_path(container_id).parent
    except InvalidInput:
        return
    if d.is_dir() and not (d / "state.json").exists():
        _remove_tree(d)


def remove(container_id: str) -> None:
    """Remove every host file Arca keeps for the container (idempotent)."""
    _remove_tree(td_dir(container_id))
    _remove_tree(state_path(container_id).parent)
