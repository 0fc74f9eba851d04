"""Reading an OCI bundle, choosing its TEE, and rewriting it for a trust domain (contract §3).

Pure functions over the parsed ``config.json`` so they are tested without runc. What this
module does not do: talk to the TEE platform, compute digests, or run anything.
"""

from __future__ import annotations

import json
import pathlib

from arca.host import annotations as A
from arca.wire import constants as C
from arca.wire.errors import ConfigError, InvalidInput
from arca.wire.tees import KNOWN_TEES

TYPE_CHECKING = False  # ``typing`` costs ~3 ms per arca-runtime call
if TYPE_CHECKING:
    from typing import Any

    from arca.wire.descriptor import LaunchDescriptor, ProcessSpec

# ``arca.wire.descriptor`` (dataclasses, fnmatch) is imported only for TEE containers: plain
# containers pass through ``read_bundle``/``select_tee`` on their way to runc.

#: ``config.json`` larger than this is refused before parsing (real ones are a few KiB).
MAX_CONFIG_BYTES = 4 * 1024 * 1024


class BundleError(InvalidInput):
    """The bundle handed to ``create`` is unusable (config.json, rootfs, annotations)."""


class Bundle:
    __slots__ = ("path", "config")

    def __init__(self, path: pathlib.Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config

    @property
    def annotations(self) -> dict[str, str]:
        ann = self.config.get("annotations") or {}
        return ann if isinstance(ann, dict) else {}

    def rootfs(self) -> pathlib.Path:
        root = self.config.get("root")
        if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
            raise BundleError("config.json: root.path is missing")
        p = pathlib.Path(root["path"])
        return p if p.is_absolute() else self.path / p


def read_bundle(path: pathlib.Path) -> Bundle:
    cfg = path / "config.json"
    try:
        with open(cfg, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(f"bundle {path} has no config.json") from None
    except OSError as e:
        raise BundleError(f"cannot read {cfg}: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise BundleError(f"{cfg} exceeds {MAX_CONFIG_BYTES} bytes")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"malformed config.json in {path}: {e}") from None
    if not isinstance(obj, dict):
        raise BundleError(f"malformed config.json in {path}: not a JSON object")
    ann = obj.get("annotations")
    if ann is not None and not (
        isinstance(ann, dict) and all(isinstance(v, str) for v in ann.values())
    ):
        raise BundleError("config.json: annotations must map strings to strings")
    return Bundle(path, obj)


def select_tee(bundle: Bundle, default_tee: str) -> str:
    """The TEE to launch, or ``"none"`` for plain runc.

    Sandbox (pause) containers always pass through: they run no tenant code and a pod's
    sandbox must start the same whatever the runtime-wide default is.
    """
    ann = bundle.annotations
    if ann.get(A.ANNOTATION_CRI_CONTAINER_TYPE) == "sandbox":
        return "none"
    if A.ANNOTATION_TEE in ann:
        tee, origin = ann[A.ANNOTATION_TEE], f"annotation {A.ANNOTATION_TEE}"
    else:
        tee, origin = default_tee, "runtime default TEE (ARCA_TEE / runtime.json)"
    if tee == "none":
        return tee
    if tee not in KNOWN_TEES:
        raise BundleError(
            f"unknown TEE {tee!r} in {origin} (known: {', '.join(KNOWN_TEES)})"
        )
    from arca.host import backends  # the TEEs this build can launch

    if not backends.available(tee):
        raise ConfigError(
            f"TEE {tee!r} from {origin} is not available in this runtime "
            f"(available: {', '.join(backends.names())}, none)"
        )
    # Can this host launch it? The backend's own check, before anything is written or started
    # (BackendUnavailable names what the host lacks; no-op for sim).
    backends.get(tee).check_host()
    return tee


def original_process(bundle: Bundle) -> dict[str, Any]:
    proc = bundle.config.get("process")
    if not isinstance(proc, dict):
        raise BundleError("config.json: process is missing")
    return proc


def measured_env(env: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The environment as measured: orchestrator variables dropped, sorted by name."""
    from arca.wire.descriptor import is_orchestrator_env

    return tuple(sorted((e for e in env if not is_orchestrator_env(e)), key=lambda e: e))


def process_spec(proc: dict[str, Any]) -> ProcessSpec:
    """The measured form of an OCI ``process`` object (validated: it is host input)."""
    from arca.wire.descriptor import ProcessSpec

    args = proc.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise BundleError("config.json: process.args must be a non-empty list of strings")
    env = proc.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise BundleError("config.json: process.env must be a list of strings")
    cwd = proc.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise BundleError("config.json: process.cwd must be an absolute path")
    user = proc.get("user", {})
    if not isinstance(user, dict):
        raise BundleError("config.json: process.user must be an object")
    ids = []
    for k in ("uid", "gid"):
        v = user.get(k, 0)
        if type(v) is not int or not 0 <= v < 2**32:
            raise BundleError(f"config.json: process.user.{k} must be an integer in [0, 2^32)")
        ids.append(v)
    return ProcessSpec(tuple(args), cwd, ids[0], ids[1], measured_env(env))


def decode_init_data(bundle: Bundle) -> bytes | None:
    """Init-data TOML from its annotation (base64, optionally gzip), or ``None``. It is parsed
    here too, so bad init-data is refused at create rather than by the agent at start."""
    value = bundle.annotations.get(A.ANNOTATION_INIT_DATA)
    if value is None:
        return None
    from arca.wire.initdata import InitData

    raw = decode_annotation(value)
    InitData.parse(raw).check_broker_authenticated()
    return raw


def decode_annotation(value: str) -> bytes:
    """The ``io.arca.init-data`` annotation: base64 of the TOML, optionally gzip-compressed."""
    import base64
    import binascii
    import zlib

    from arca.wire.initdata import MAX_INIT_DATA_BYTES, InitDataError

    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InitDataError("init-data annotation is not valid base64") from None
    if raw[:2] == b"\x1f\x8b":
        d = zlib.decompressobj(wbits=31)
        try:
            # Bounded output: a small gzip bomb must not exhaust memory.
            raw = d.decompress(raw, MAX_INIT_DATA_BYTES + 1)
        except zlib.error as e:
            raise InitDataError(f"init-data annotation: bad gzip data: {e}") from None
        if len(raw) > MAX_INIT_DATA_BYTES or not d.eof:
            raise InitDataError(f"init-data annotation: gzip data truncated or larger than "
                                f"{MAX_INIT_DATA_BYTES} bytes")
    if len(raw) > MAX_INIT_DATA_BYTES:
        raise InitDataError(f"init-data exceeds {MAX_INIT_DATA_BYTES} bytes")
    return raw


def launch_descriptor(
    tee: str, guest_runtime_digest: str, rootfs_digest: str, proc: dict[str, Any]
) -> LaunchDescriptor:
    from arca.wire.descriptor import LaunchDescriptor

    return LaunchDescriptor(tee, guest_runtime_digest, rootfs_digest, process_spec(proc))


def rewrite_config(
    config: dict[str, Any],
    *,
    td_dir: pathlib.Path,
    guest_runtime_path: pathlib.Path,
    agent_args: list[str],
    agent_env: list[str],
) -> dict[str, Any]:
    """The TD's config.json: Arca mounts appended, the agent as the container's process.

    Mounts are appended so they land on top of the orchestrator's own ``/run`` tmpfs. The
    terminal, rlimits, capabilities and LSM settings of the original process are kept: they
    are runc's business and the agent inherits them.
    """
    # A deep copy (it came from JSON) without ``copy``.
    new: dict[str, Any] = json.loads(json.dumps(config))
    mounts = new.get("mounts") or []
    if not isinstance(mounts, list):
        raise BundleError("config.json: mounts must be a list")
    mounts += [
        {"destination": C.TD_RUN_DIR, "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=0755", "size=16m"]},
        {"destination": C.SIM_DEVICE_DIR, "type": "bind", "source": str(td_dir),
         "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]},
        {"destination": C.GUEST_RUNTIME_MOUNT, "type": "bind", "source": str(guest_runtime_path),
         "options": ["rbind", "ro", "nosuid", "nodev"]},
    ]
    new["mounts"] = mounts
    proc = new["process"]
    proc["args"] = list(agent_args)
    proc["env"] = list(agent_env)
    proc["cwd"] = "/"
    proc["user"] = {"uid": 0, "gid": 0}
    return new
