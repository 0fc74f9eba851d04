"""The OCI runtime spec (config.json) of an ``arca run`` container.

Starts from runc's default spec (``runc spec``: namespaces, /proc, /dev, /dev/pts, /dev/shm,
/dev/mqueue, /sys, masked and read-only paths, device cgroup deny-all) with containerd's default
capability set (what ``ctr run`` grants, so the agent can drop to the image user), then adds the
image's process (:mod:`arca.host.imageconfig`), ``-v`` bind mounts and Arca's annotations.

Networking (:mod:`.network`): ``network`` is the namespace entry and network-dependent mounts
of a private (default for ``arca run``) or empty network namespace; without it the container
shares the host's network namespace (the host's /sys, /etc/resolv.conf and /etc/hosts
read-only). The host's /etc/hosts is bind-mounted read-only either way. Capabilities are
podman's default set: no ``CAP_NET_RAW`` (with it a container on the host's network could read
every other container's loopback traffic), ``CAP_MKNOD`` or ``CAP_AUDIT_WRITE``.
"""

from __future__ import annotations

import os

from arca.host.annotations import ANNOTATION_INIT_DATA, ANNOTATION_TEE
from arca.wire.errors import InvalidInput
from arca.wire.tees import KNOWN_TEES

# Imported by every ``arca run``: no dataclasses, typing or pathlib at run time (~10 ms).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from arca.host.imageconfig import ProcessConfig

#: podman's default capabilities (containers.conf ``default_capabilities`` since podman 4.0):
#: containerd's set without ``CAP_NET_RAW``, ``CAP_MKNOD`` and ``CAP_AUDIT_WRITE``.
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
    "CAP_SYS_CHROOT",
]
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
HOST_FILES = ("/etc/resolv.conf", "/etc/hosts")


class Volume:
    """A ``-v SRC:DST[:ro]`` bind mount; ``source`` is absolute with symlinks resolved. For a
    named volume (``-v NAME:DST``, podman's rule: SRC not starting with ``/`` or ``.``),
    ``volume`` is the name and ``source`` is empty until the volume store resolves it
    (:mod:`.volumes`)."""

    __slots__ = ("source", "destination", "readonly", "volume")

    def __init__(self, source: str, destination: str, readonly: bool = False,
                 volume: str | None = None) -> None:
        self.source = source
        self.destination = destination
        self.readonly = readonly
        self.volume = volume

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Volume) and (
            self.source, self.destination, self.readonly, self.volume) == (
            other.source, other.destination, other.readonly, other.volume)

    def __repr__(self) -> str:
        return (f"Volume({self.source!r}, {self.destination!r}, {self.readonly!r}, "
                f"{self.volume!r})")

    @classmethod
    def parse(cls, spec: str) -> Volume:
        """``SRC:DST[:ro|rw]``; SRC must exist on the host (or name a volume), DST must be
        absolute."""
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise InvalidInput(f"volume {spec!r}: expected SRC:DST[:ro]")
        ro = False
        if len(parts) == 3:
            if parts[2] not in ("ro", "rw"):
                raise InvalidInput(f"volume {spec!r}: mode must be 'ro' or 'rw'")
            ro = parts[2] == "ro"
        dst = os.path.normpath(parts[1])
        if not dst.startswith("/") or dst == "/":
            raise InvalidInput(f"volume {spec!r}: destination must be an absolute path "
                               "other than /")
        if not parts[0].startswith(("/", ".")):
            from arca.host.containers.state import valid_name

            if not valid_name(parts[0]):
                raise InvalidInput(f"invalid volume name {parts[0]!r} (letters, digits, "
                                   "_ . -; starting with a letter or digit)")
            return cls("", dst, ro, volume=parts[0])
        src = os.path.realpath(parts[0])
        if not os.path.exists(src):
            raise InvalidInput(f"volume {spec!r}: source {src} does not exist")
        return cls(src, dst, ro)

    def to_mount(self) -> dict[str, Any]:
        return {"destination": self.destination, "type": "bind", "source": self.source,
                "options": ["rbind", "ro" if self.readonly else "rw", "nosuid", "nodev"]}


def encode_init_data(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def build_spec(
    process: ProcessConfig | dict[str, Any],
    *,
    container_id: str,
    hostname: str,
    tee: str,
    volumes: list[Volume] = (),  # type: ignore[assignment]
    init_data: bytes | None = None,
    terminal: tuple[int, int] | None = None,
    network: tuple[dict[str, Any] | None, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    if tee not in KNOWN_TEES:
        raise InvalidInput(f"unknown tee {tee!r} (one of {', '.join(KNOWN_TEES)})")
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
    ]
    netns, net_mounts = network if network is not None else (None, [])
    if netns is None:
        # host network: sysfs of the host's netns, read-only, like podman --net=host
        net_mounts = [{"destination": "/sys", "type": "bind", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}]
    mounts += net_mounts
    mounts += [{"destination": f, "type": "bind", "source": f,
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}
               for f in HOST_FILES if os.path.isfile(f)
               and not any(m["destination"] == f for m in net_mounts)]
    mounts += [v.to_mount() for v in volumes]
    # The OCI process (args, env, cwd, user): a ProcessConfig or its to_oci() form.
    proc = dict(process) if isinstance(process, dict) else process.to_oci()
    proc.update({
        # ``terminal``: (rows, columns) of a pseudo-terminal for the process (``-t``). Not
        # part of the measured process (arguments, environment, directory, user): the same
        # image and command measure the same with or without a terminal.
        "terminal": terminal is not None,
        "capabilities": {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    })
    if terminal is not None:
        proc["consoleSize"] = {"height": terminal[0], "width": terminal[1]}
    # No annotation for "none": the runtime then passes the bundle straight to runc without
    # starting Python or asking the sim daemon (``arca run`` sets ARCA_TEE=none for it, so a
    # runtime default TEE cannot turn it into a TD).
    annotations = {ANNOTATION_TEE: tee} if tee != "none" else {}
    if init_data is not None:
        annotations[ANNOTATION_INIT_DATA] = encode_init_data(init_data)
    return {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname,
        "process": proc,
        "mounts": mounts,
        "annotations": annotations,
        "linux": {
            "cgroupsPath": f"/arca/{container_id}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
            + ([netns] if netns is not None else []),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def generated_init_data(kbs_url: str | None, mounts: list[str] | tuple[str, ...] = ()) -> bytes:
    """The init-data ``--kbs URL`` and ``-v SRC:DST`` stand for: the KBS URL (unauthenticated:
    no CA is named) and a policy allowing mounts at exactly the volumes' destinations, nothing
    else. Its digest is what the TD's evidence binds, so tenants can reproduce it."""
    doc = 'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n'
    if kbs_url is not None:
        if not kbs_url.startswith(("http://", "https://")) or any(c in kbs_url
                                                                   for c in "\"\n\\"):
            raise InvalidInput(f"--kbs {kbs_url!r}: expected an http(s) URL")
        # --kbs URL names no CA: the broker is not authenticated, say so in what is measured
        doc += f'kbs_url = "{kbs_url}"\n' "agent = 'insecure_kbs = true'\n"
    if mounts:
        import json

        doc += f"policy = '{json.dumps({'allow_mounts': sorted(set(mounts))})}'\n"
    return doc.encode()
