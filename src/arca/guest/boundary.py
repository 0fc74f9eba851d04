"""The TD's boundary as the agent sees it, checked before any secret is fetched. The host runtime
refuses bad mounts and namespaces at ``create`` (:mod:`arca.host.runtime.tdchecks`), but a
hostile host can skip that, so the agent checks what it can see: every mount point in
``/proc/self/mountinfo`` is Arca's own (each once), a kernel tree, an orchestrator file of the
fixed default set, or listed in the measured policy's ``allow_mounts``; none is shared
(propagation would export the secrets tmpfs); the agent is PID 1 of its own PID namespace. The
same rules serve the host check (one definition). Not seen: what lies under a mount point, IPC
sharing, hooks (docs/threat-model.md)."""

from __future__ import annotations

import os
import stat

from arca.wire.constants import GUEST_RUNTIME_MOUNT, SIM_DEVICE_DIR, TD_RUN_DIR
from arca.wire.errors import PolicyDenied
from arca.wire.initdata import ExecPolicy

#: Kernel and runtime trees (proc, sysfs, devices, runc's masks): never image content.
KERNEL_TREES = ("/proc", "/sys", "/dev")
#: What orchestrators bind in without asking the tenant (name resolution, Kubernetes).
DEFAULT_MOUNTS = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/termination-log",
                  "/var/run/secrets/kubernetes.io/serviceaccount",
                  "/run/secrets/kubernetes.io/serviceaccount")  # where /var/run -> /run
#: Where an orchestrator may put an empty memory filesystem (containerd's default ``/run``).
TMPFS_MOUNTS = ("/run", "/tmp")
#: Arca's own mounts (rootfs, guest runtime, run tmpfs, device directory): each exactly once.
ARCA_MOUNTS = ("/", GUEST_RUNTIME_MOUNT, TD_RUN_DIR, SIM_DEVICE_DIR)
#: No host mount may land on or under these.
PROTECTED = (GUEST_RUNTIME_MOUNT, TD_RUN_DIR)


def _within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree + "/")


def host_mount_refusal(dest: str, fstype: str, policy: ExecPolicy) -> str | None:
    """Why a host mount of ``fstype`` at ``dest`` (normalized, absolute) may not land, or
    ``None``."""
    if any(_within(dest, p) for p in PROTECTED) or dest == "/":
        return "it would cover the guest runtime or /run/arca"
    if any(_within(dest, t) for t in KERNEL_TREES) or dest in DEFAULT_MOUNTS \
            or dest in policy.allow_mounts or (dest in TMPFS_MOUNTS and fstype == "tmpfs"):
        return None
    return "the measured policy does not allow a mount there (policy.allow_mounts)"


def over_content(rootfs: str, dest: str) -> str | None:
    """Why a mount at ``dest`` would cover the image's measured content in ``rootfs``, or
    ``None``: the destination must be missing or an empty directory, reached without a
    symbolic link."""
    path = rootfs
    for part in dest.strip("/").split("/"):
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return f"{path[len(rootfs):]} is a symbolic link in the image"
    if not stat.S_ISDIR(st.st_mode):
        return "it covers a file of the image's measured content"
    if os.listdir(path):
        return "it covers a non-empty directory of the image's measured content"
    return None


def volume_refusal(rootfs: str, dest: str, policy: ExecPolicy) -> str | None:
    """Why a host directory (a VM's volume, mounted by the guest) may not land at ``dest``
    (normalized, absolute) over ``rootfs``, or ``None``."""
    if any(_within(dest, t) for t in KERNEL_TREES):
        return "it would cover a kernel tree"
    return host_mount_refusal(dest, "", policy) or over_content(rootfs, dest)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    parts = field.split("\\")
    return parts[0] + "".join(chr(int(p[:3], 8)) + p[3:] for p in parts[1:])


def check_mounts(mountinfo: str, policy: ExecPolicy) -> None:
    """Refuse (naming the mount) anything but the allowed set; see the module docstring."""
    seen: set[str] = set()
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        f = fields.split()
        mnt, (fstype, source) = _unescape(f[4]), (tail.split() + ["?", "?"])[:2]
        if mnt in ARCA_MOUNTS and mnt not in seen:
            seen.add(mnt)
        elif (why := host_mount_refusal(mnt, fstype, policy)) is not None:
            raise PolicyDenied(f"mount of {source} at {mnt} refused: {why}", field="mounts")
        if not policy.allow_propagation and any(o.startswith("shared:") for o in f[6:]):
            raise PolicyDenied(f"mount at {mnt} refused: shared propagation would export the "
                               "TD's mounts (policy.allow_propagation)", field="mounts")


def check_boundary(policy: ExecPolicy, getpid: int) -> None:
    """The agent's own namespaces and mounts (only inside a TD: the agent is its PID 1)."""
    if getpid != 1 and "pid" not in policy.allow_namespaces:
        raise PolicyDenied("the TD shares its PID namespace (the agent is not its PID 1); "
                           "the measured policy does not allow it (policy.allow_namespaces)",
                           field="namespaces")
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        check_mounts(f.read(), policy)
