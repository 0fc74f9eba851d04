"""What the host runtime refuses at ``create`` so a TD never starts with host input that is
neither measured nor allowed by its measured policy (docs/threat-model.md, items 1, 4 and mounts).

For a TEE container, before Arca records any state (so before anything is registered or any
secret could be fetched), :func:`check_launch` refuses, naming what it refuses:

* **namespaces**: a PID, IPC or mount namespace shared with the host (no entry) or joined by
  path, unless ``policy.allow_namespaces`` lists it. Joining the IPC namespace of the container's
  own Kubernetes pod sandbox (pause: runs no tenant code) is allowed, as every pod does;
* **hooks** that run in the container's namespaces before the agent (``createContainer``,
  ``startContainer``), unless ``policy.allow_hooks``;
* **propagation**: shared or slave root or mount propagation (exports the TD's mounts, or lets
  the host add some later), unless ``policy.allow_propagation``;
* **mounts** anywhere but the allowed set (:func:`arca.guest.boundary.host_mount_refusal`: one
  definition for the runtime and the agent), and a policy-allowed mount over the image's
  measured content: its destination must be missing or an empty directory, reached without a
  symbolic link.

For any container, TEE or not, :func:`check_joiner` refuses joining the PID, mount or IPC
namespace of a running TD (``kubectl debug --target``). The agent checks mounts and its PID
namespace again inside the TD (:mod:`arca.guest.boundary`): a hostile host can skip this module.
"""

from __future__ import annotations

import json
import os

from arca.guest.boundary import (
    DEFAULT_MOUNTS,
    KERNEL_TREES,
    TMPFS_MOUNTS,
    host_mount_refusal,
    over_content,
)
from arca.wire import constants as C
from arca.wire.errors import PolicyDenied
from arca.wire.initdata import ExecPolicy

TYPE_CHECKING = False  # ``typing`` costs ~3 ms on the runtime's create path
if TYPE_CHECKING:
    from typing import Any

#: OCI namespace type -> the name ``policy.allow_namespaces`` uses.
SHARED_NS = {"pid": "pid", "ipc": "ipc", "mount": "mount"}
#: ``/proc/<pid>/ns/<file>`` names of those namespaces.
NS_FILES = {"pid": "pid", "ipc": "ipc", "mount": "mnt"}
HOOKS_IN_CONTAINER = ("createContainer", "startContainer")
PROPAGATION = ("shared", "rshared", "slave", "rslave")
CRI_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"


def allowed_mounts(policy: ExecPolicy) -> list[str]:
    """Where host mounts may land under ``policy`` (``arca measure`` shows it): the default set
    (measured with the guest runtime) and ``allow_mounts`` (measured with the init-data)."""
    return [*(f"{t}/**" for t in KERNEL_TREES), *DEFAULT_MOUNTS,
            *(f"{t} (tmpfs)" for t in TMPFS_MOUNTS), *policy.allow_mounts]


def _refuse(cid: str, what: str, why: str, field: str) -> PolicyDenied:
    return PolicyDenied(f"TEE container {cid}: {what} refused: {why}", field=field)


def _ns_pid(path: str) -> int | None:
    parts = path.split("/")
    if len(parts) == 5 and parts[:2] == ["", "proc"] and parts[2].isdigit() and parts[3] == "ns":
        return int(parts[2])
    return None


def _sandbox_init(config: dict[str, Any], runc_root: str) -> int | None:
    sandbox = (config.get("annotations") or {}).get(CRI_SANDBOX_ID)
    if not isinstance(sandbox, str) or not sandbox or "/" in sandbox or sandbox in (".", ".."):
        return None
    try:
        with open(os.path.join(runc_root, sandbox, "state.json"), "rb") as f:
            state = json.load(f)
        return int(state["init_process_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _namespaces(cid: str, config: dict[str, Any], policy: ExecPolicy, runc_root: str) -> None:
    linux = config.get("linux") or {}
    entries = {n.get("type"): n for n in linux.get("namespaces") or [] if isinstance(n, dict)}
    for oci, name in SHARED_NS.items():
        if name in policy.allow_namespaces:
            continue
        entry = entries.get(oci)
        if entry is None:
            raise _refuse(cid, f"the host's {oci} namespace", "a TD has namespaces of its own "
                          "unless the measured policy allows sharing (policy.allow_namespaces)",
                          "namespaces")
        path = entry.get("path")
        if not path:
            continue
        pid = _ns_pid(path) if isinstance(path, str) else None
        if oci == "ipc" and pid is not None and pid == _sandbox_init(config, runc_root):
            continue  # the pod sandbox's (pause): every Kubernetes container joins it
        raise _refuse(cid, f"joining the {oci} namespace {path!r}", "it is shared with another "
                      "container; the measured policy does not allow it "
                      "(policy.allow_namespaces)", "namespaces")


def _hooks_and_propagation(cid: str, config: dict[str, Any], policy: ExecPolicy) -> None:
    hooks = config.get("hooks") or {}
    if not policy.allow_hooks and isinstance(hooks, dict):
        for kind in HOOKS_IN_CONTAINER:
            for h in hooks.get(kind) or []:
                what = h.get("path") if isinstance(h, dict) else h
                raise _refuse(cid, f"{kind} hook {what!r}", "it runs inside the TD before the "
                              "agent with unmeasured arguments (policy.allow_hooks)", "hooks")
    if policy.allow_propagation:
        return
    prop = (config.get("linux") or {}).get("rootfsPropagation")
    if prop in PROPAGATION:
        raise _refuse(cid, f"rootfsPropagation {prop!r}", "shared or slave propagation exports "
                      "the TD's mounts or imports the host's (policy.allow_propagation)",
                      "propagation")
    for m in config.get("mounts") or []:
        opts = m.get("options") or [] if isinstance(m, dict) else []
        bad = [o for o in opts if o in PROPAGATION]
        if bad:
            raise _refuse(cid, f"mount at {m.get('destination')!r} with {bad[0]} propagation",
                          "shared or slave propagation exports the TD's mounts or imports the "
                          "host's (policy.allow_propagation)", "propagation")


def _mounts(cid: str, config: dict[str, Any], policy: ExecPolicy, rootfs: str) -> None:
    for m in config.get("mounts") or []:
        if not isinstance(m, dict) or not isinstance(m.get("destination"), str):
            raise _refuse(cid, f"mount {m!r}", "it has no destination", "mounts")
        raw = m["destination"]
        dest = os.path.normpath("/" + raw.lstrip("/"))
        fstype = str(m.get("type") or ("bind" if "bind" in (m.get("options") or []) else ""))
        what = f"mount of {m.get('source')!r} at {raw!r}"
        why = host_mount_refusal(dest, fstype, policy)
        if why is None and not (any(dest == t or dest.startswith(t + "/") for t in KERNEL_TREES)
                                or dest in DEFAULT_MOUNTS or dest in TMPFS_MOUNTS):
            why = over_content(rootfs, dest)
        if why is not None:
            raise _refuse(cid, what, why, "mounts")


def check_launch(cid: str, config: dict[str, Any], init_data: bytes | None, rootfs: str,
                 runc_root: str) -> None:
    """Refuse a TEE container whose bundle breaks the boundary (module docstring)."""
    from arca.host.runtime.execpolicy import policy_of

    policy = policy_of(init_data)
    _namespaces(cid, config, policy, runc_root)
    _hooks_and_propagation(cid, config, policy)
    _mounts(cid, config, policy, rootfs)


def check_joiner(cid: str, config: dict[str, Any]) -> None:
    """Refuse any container joining the PID, mount or IPC namespace of a running TD."""
    for n in (config.get("linux") or {}).get("namespaces") or []:
        path = n.get("path") if isinstance(n, dict) else None
        pid = _ns_pid(path) if isinstance(path, str) else None
        if pid is None or n.get("type") not in NS_FILES:
            continue
        if os.path.exists(f"/proc/{pid}/root{C.SIM_DEVICE_DIR}/descriptor.json"):
            raise PolicyDenied(f"container {cid}: joining the {n['type']} namespace of a trust "
                               f"domain ({path}) refused: it would reach the TD's secrets and "
                               "device", field="namespaces")


def check_exec_without_state(cid: str, runc_root: str) -> None:
    """Fail closed: ``exec`` into a container Arca has no state for is refused when runc's own
    state says it is a TD (its device directory is mounted), e.g. after its Arca state was
    removed by mistake or by a container of the same id elsewhere."""
    if "/" in cid or cid in ("", ".", ".."):
        return
    try:
        with open(os.path.join(runc_root, cid, "state.json"), "rb") as f:
            raw = f.read()
    except OSError:
        return  # runc refuses an unknown container itself
    if f'"{C.SIM_DEVICE_DIR}"'.encode() in raw:
        raise PolicyDenied(f"exec into TEE container {cid} refused: Arca has no state for it "
                           f"under runc root {runc_root} (failing closed)", field="exec")
