"""Named volumes: ``arca volume create|ls|inspect|rm|prune`` and ``arca run -v NAME:/path``.

As podman's ``local`` driver: a volume is a directory ``ARCA_ROOT/volumes/NAME/_data`` that
containers get as a bind mount, created by ``arca run`` when missing, kept until ``volume rm``.
The store directory is root-only (0700, ADR 0028: a volume may hold a container's setuid files).
In a TD a volume is a bind mount like any ``-v HOST:DST``: the runtime's measured
``allow_mounts`` rule (docs/threat-model.md §3) decides, and nothing here relaxes it (ADR 0051).

Which containers use a volume is written next to each container's record (``volumes.json``)
under the volume store's lock, the same lock ``rm`` and ``prune`` hold while they check: a
volume cannot be removed between the moment ``arca run`` resolved it and the moment its
container names it. A container uses its volumes until it is removed (podman's rule), so a
stopped container that ``arca start`` may run again keeps them.
"""

from __future__ import annotations

import os

from arca._internal.fastjson import json_dumps, json_loads
from arca._internal.fsutil import private_dir, write_atomic
from arca.errors import InvalidInput, NotFound, StateError
from arca.host.containers.state import (
    ContainerStore,
    FileLock,
    now,
    remove_tree,
    root_dir,
    valid_id,
    valid_name,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Per container: the names of the volumes it uses (beside ``container.json``).
USES_FILE = "volumes.json"


def is_named(source: str) -> bool:
    """podman's rule for ``-v SRC:DST``: a source not starting with ``/`` or ``.`` names a
    volume (``./data`` and ``/srv/data`` are host paths)."""
    return not source.startswith(("/", "."))


class VolumeStore:
    def __init__(self, root: str | None = None, containers: ContainerStore | None = None
                 ) -> None:
        self.root = root if root is not None else os.path.join(root_dir(), "volumes")
        self.containers = containers or ContainerStore()

    def lock(self) -> FileLock:
        private_dir(self.root)
        return FileLock(os.path.join(self.root, "lock"))

    def path(self, name: str) -> str:
        if not valid_name(name):
            raise InvalidInput(f"invalid volume name {name!r} (letters, digits, _ . -; "
                               "starting with a letter or digit)")
        return os.path.join(self.root, name)

    def data(self, name: str) -> str:
        """The directory containers mount."""
        return os.path.join(self.path(name), "_data")

    # -- create / read ---------------------------------------------------------------------
    def create(self, name: str | None = None, labels: dict[str, str] | None = None, *,
               exist_ok: bool = False) -> dict[str, Any]:
        with self.lock():
            return self._create(name or os.urandom(32).hex(), labels or {}, exist_ok)

    def _create(self, name: str, labels: dict[str, str], exist_ok: bool) -> dict[str, Any]:
        d = self.path(name)
        if os.path.isdir(d):
            if exist_ok:
                return self.get(name)
            raise StateError(f"volume {name!r} already exists")
        # made complete under a temporary name, then renamed: never half a volume
        tmp = os.path.join(self.root, f".new-{os.urandom(8).hex()}")
        os.mkdir(tmp, 0o700)
        try:
            os.mkdir(os.path.join(tmp, "_data"), 0o755)
            meta = {"name": name, "created": now(), "labels": labels}
            write_atomic(os.path.join(tmp, "volume.json"), json_dumps(meta).encode(), 0o600)
            os.rename(tmp, d)
        except BaseException:
            remove_tree(tmp)
            raise
        return self.get(name)

    def get(self, name: str) -> dict[str, Any]:
        """podman's ``volume inspect`` fields."""
        d = self.path(name)
        try:
            with open(os.path.join(d, "volume.json"), "rb") as f:
                meta = json_loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"no such volume: {name}") from None
        except ValueError:
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        return {"Name": name, "Driver": "local", "Mountpoint": os.path.join(d, "_data"),
                "CreatedAt": meta.get("created", ""), "Labels": meta.get("labels", {}),
                "Scope": "local", "Options": {}}

    def ls(self) -> list[dict[str, Any]]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if valid_name(n) and os.path.isdir(os.path.join(self.root, n)):
                try:
                    out.append(self.get(n))
                except NotFound:
                    continue  # removed meanwhile
        return out

    # -- use by containers -----------------------------------------------------------------
    def attach(self, cid: str, names: list[str]) -> list[str]:
        """The data directories of ``names`` (created when missing, as ``podman run`` does),
        recorded as used by container ``cid`` in the same locked step."""
        with self.lock():
            paths = [self.data(self._create(n, {}, True)["Name"]) for n in names]
            write_atomic(os.path.join(self.containers.dir(cid), USES_FILE),
                         json_dumps(sorted(set(names))).encode(), 0o600, durable=False)
        return paths

    def users(self) -> dict[str, list[str]]:
        """Volume name -> names of the containers using it (call under :meth:`lock`)."""
        out: dict[str, list[str]] = {}
        try:
            entries = os.listdir(self.containers.root)
        except FileNotFoundError:
            return out
        for cid in entries:
            if not valid_id(cid):
                continue
            try:
                with open(os.path.join(self.containers.root, cid, USES_FILE), "rb") as f:
                    names = json_loads(f.read())
                rec = self.containers.load(cid)
            except (OSError, ValueError, NotFound):
                continue  # no volumes, or the container is being removed
            if isinstance(names, list):
                for n in names:
                    out.setdefault(str(n), []).append(rec.name)
        return out

    # -- remove ----------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        """Refused while any container (running or not) uses it, naming them."""
        with self.lock():
            d = self.path(name)
            if not os.path.isdir(d):
                raise NotFound(f"no such volume: {name}")
            users = self.users().get(name)
            if users:
                raise StateError(f"volume {name} is in use by container(s) "
                                 f"{', '.join(sorted(users))} (arca rm them first, or "
                                 "arca volume rm -f)")
            self._delete(name)

    def prune(self) -> list[str]:
        """Remove every volume no container uses; their names."""
        with self.lock():
            used = self.users()
            gone = [v["Name"] for v in self.ls() if v["Name"] not in used]
            for n in gone:
                self._delete(n)
        return gone

    def _delete(self, name: str) -> None:
        # renamed out of the way first: a concurrent `arca run` never mounts half a volume
        d = self.path(name)
        tmp = os.path.join(self.root, f".del-{os.urandom(8).hex()}")
        os.rename(d, tmp)
        remove_tree(tmp)
