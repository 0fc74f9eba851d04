"""The launch descriptor (what a TD was started to run: backend, guest runtime, root filesystem,
process) and its measurement: SHA-384 of its RFC 8785 JSON, for TDX/SNP carried on the measured
kernel command line. Host and tenant (``arca measure``) compute it from the same inputs, so this
module is the single definition of both."""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatchcase

from arca.wire.errors import WireFormatError
from arca.wire.jcs import canonicalize
from arca.wire.record import dataclass, field

TYPE_CHECKING = False  # typing costs ms per start: see arca.wire.record
if TYPE_CHECKING:
    from typing import Any

DESCRIPTOR_VERSION = 1

#: Environment variables an orchestrator injects that say nothing about the workload's
#: behaviour: the minimum (container hostname, terminal type, the Kubernetes API service
#: Kubernetes always injects). They are left out of the measurement so the same image measures
#: the same under ctr, Kubernetes and ``arca run``, and may only *add* a variable, never replace
#: a measured one. Other service links (``*_SERVICE_HOST``, ``*_PORT``...) steer where a workload
#: connects: measured unless the init-data policy lists them in ``orchestrator_env``.
ORCHESTRATOR_ENV_ALLOWLIST: tuple[str, ...] = (
    "HOSTNAME", "TERM", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
    "KUBERNETES_SERVICE_PORT_HTTPS", "KUBERNETES_PORT", "KUBERNETES_PORT_443_TCP",
    "KUBERNETES_PORT_443_TCP_PROTO", "KUBERNETES_PORT_443_TCP_PORT",
    "KUBERNETES_PORT_443_TCP_ADDR")


def is_orchestrator_env(entry: str, extra: tuple[str, ...] = ()) -> bool:
    """``NAME=value`` is in the minimum or matches ``extra`` (policy ``orchestrator_env``)."""
    name = entry.split("=", 1)[0]
    return name in ORCHESTRATOR_ENV_ALLOWLIST or any(fnmatchcase(name, p) for p in extra)


@dataclass(frozen=True)
class ProcessSpec:
    args: tuple[str, ...]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    env: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"args": list(self.args), "cwd": self.cwd,
                "user": {"uid": self.uid, "gid": self.gid}, "env": list(self.env)}

    @classmethod
    def from_json(cls, obj: Any) -> ProcessSpec:
        try:
            _only_keys(obj, {"args", "cwd", "user", "env"}, "process")
            user = obj["user"]
            _only_keys(user, {"uid", "gid"}, "process.user")
            args = obj["args"]
            env = obj["env"]
            if not (isinstance(args, list) and all(isinstance(a, str) for a in args) and args):
                raise WireFormatError("process.args must be a non-empty list of strings")
            if not (isinstance(env, list) and all(isinstance(e, str) for e in env)):
                raise WireFormatError("process.env must be a list of strings")
            if not isinstance(obj["cwd"], str) or not obj["cwd"].startswith("/"):
                raise WireFormatError("process.cwd must be an absolute path")
            for k in ("uid", "gid"):
                if type(user[k]) is not int or not 0 <= user[k] < 2**32:
                    raise WireFormatError(f"process.user.{k} must be an integer in [0, 2^32)")
            return cls(tuple(args), obj["cwd"], user["uid"], user["gid"], tuple(env))
        except KeyError as e:
            raise WireFormatError(f"process: missing field {e.args[0]!r}") from None


@dataclass(frozen=True)
class LaunchDescriptor:
    tee: str
    guest_runtime_digest: str
    rootfs_digest: str
    process: ProcessSpec
    version: int = DESCRIPTOR_VERSION
    #: Free-form, measured extras a backend needs (e.g. kernel/initrd digests for ``vm``).
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"version": self.version, "tee": self.tee,
                               "guest_runtime_digest": self.guest_runtime_digest,
                               "rootfs_digest": self.rootfs_digest,
                               "process": self.process.to_json()}
        if self.extra:
            obj["extra"] = dict(self.extra)
        return obj

    def measurement(self) -> bytes:
        """SHA-384 of the canonical JSON: 48 bytes."""
        return hashlib.sha384(canonicalize(self.to_json())).digest()

    @classmethod
    def from_json(cls, obj: Any) -> LaunchDescriptor:
        try:
            _only_keys(obj, {"version", "tee", "guest_runtime_digest", "rootfs_digest", "process",
                             "extra"}, "launch descriptor")
            if obj["version"] != DESCRIPTOR_VERSION:
                raise WireFormatError(f"unsupported launch descriptor version {obj['version']!r}")
            for k in ("tee", "guest_runtime_digest", "rootfs_digest"):
                if not isinstance(obj[k], str):
                    raise WireFormatError(f"launch descriptor field {k!r} must be a string")
            extra = obj.get("extra", {})
            if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in extra.items()):
                raise WireFormatError("launch descriptor 'extra' must map strings to strings")
            return cls(obj["tee"], obj["guest_runtime_digest"], obj["rootfs_digest"],
                       ProcessSpec.from_json(obj["process"]), extra=dict(extra))
        except KeyError as e:
            raise WireFormatError(f"launch descriptor: missing field {e.args[0]!r}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> LaunchDescriptor:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise WireFormatError(f"launch descriptor is not JSON: {e}") from None
        return cls.from_json(obj)


def _only_keys(obj: Any, allowed: set[str], what: str) -> None:
    if not isinstance(obj, dict):
        raise WireFormatError(f"{what} must be a JSON object")
    unknown = set(obj) - allowed
    if unknown:
        raise WireFormatError(f"{what}: unknown field(s) {sorted(unknown)}")
