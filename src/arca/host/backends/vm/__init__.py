"""The ``vm`` backend: one plain VM per container (QEMU ``-M microvm``), the TDX/SNP launch path
without memory encryption; the sim platform plays the VM's security processor.

**Development and CI: ``vm`` protects nothing from this host (its root holds the platform key
and can read guest memory); it protects the TD from other containers and checks, in the guest,
that the rootfs blocks are the measured ones.** docs/vm.md says what it does and does not.

Launch (``prepare``): the container's process becomes the VMM (:mod:`.vmm`, which runs QEMU)
in the namespaces and cgroups runc makes for it; the container's root is a read-only directory
of mount points (:func:`vmm_root`) with the host's ``/usr`` (QEMU and its libraries), the guest
kernel, the initramfs and the rootfs image bind-mounted read-only, and the TD directory at
``/run/arca-vm``. The guest gets the container's process over the control port and checks it.

Measurement (``reference``, also ``arca measure``/``policy generate``):
:meth:`.launch.Launch.measurement` over kernel, initramfs, command line (rootfs root hash and
descriptor measurement) and vCPUs. The platform recomputes it from the files QEMU is handed at
registration (:meth:`VmBackend.platform_measurement`), and ``prepare`` refuses when the two
differ (a kernel or initramfs changed under the runtime).
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import socket

from arca.host.backends.base import Backend, BackendUnavailable, Launch, LaunchInputs, Reference
from arca.host.runtime import state as st
from arca.wire.errors import ConfigError, InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from arca.wire.descriptor import LaunchDescriptor

#: The VMM's interpreter: the distribution's (Debian ``python3``, installed by setup.sh), under
#: the ``/usr`` bind-mounted into the container; the venv's may live anywhere.
VMM_PYTHON = "/usr/bin/python3"
#: Mount points of the VMM's root (everything else comes from bind mounts).
_ROOT_DIRS = ("usr", "proc", "dev", "sys", "run", "tmp", "etc", "arca-vm", "arca-vmm")
_ROOT_LINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}


#: Files orchestrators bind into every container (arca run, CRI, podman): name resolution.
_PLUMBING_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def _plumbing(destination: str, source: str) -> bool:
    """Binds an orchestrator adds to every container (``/sys``, ``/etc/resolv.conf``,
    ``/etc/hosts``, ``/etc/hostname``, device nodes): they land in the VMM's container, where
    they are harmless; the guest never sees them (it writes its own ``resolv.conf``). Any other
    bind is a volume meant for the workload (a file such as ``/etc/app.conf`` too)."""
    return destination == "/sys" or destination.startswith(("/sys/", "/dev/", "/proc/")) or \
        (destination in _PLUMBING_FILES and not os.path.isdir(source))


def _is_bind(m: dict[str, Any]) -> bool:
    opts = m.get("options") or []
    return m.get("type") == "bind" or "bind" in opts or "rbind" in opts


def shares_of(config: dict[str, Any]) -> list[Any]:
    """The volumes of ``config`` (its binds that are not plumbing), as virtio-fs shares; one
    line naming the mount when one cannot reach a guest. Where they may land is checked by the
    runtime before this (``tdchecks``) and by the guest before anything runs."""
    from arca.host.backends.vm.launch import Share

    out: list[Share] = []
    for m in config.get("mounts") or []:
        src, dest = str(m.get("source")), str(m.get("destination"))
        if not _is_bind(m) or _plumbing(dest, src):
            continue
        if not (os.path.isdir(src) or os.path.isfile(src)):
            raise InvalidInput(f"vm: mount {src} -> {dest} refused: a vm guest gets a directory "
                               "or a regular file (virtio-fs), and this is neither")
        out.append(Share(src, dest, "ro" in (m.get("options") or []), f"arca-vol{len(out)}",
                         file=not os.path.isdir(src)))
    return out


def vmm_root() -> pathlib.Path:
    """The VMM container's read-only root: empty mount points and merged-/usr symlinks, shared
    by every VM (runc mounts over it in the container's own mount namespace)."""
    from arca.host import paths

    root = paths.root_dir() / "vm" / "vmm-root"
    if (root / "arca-vmm" / "vmm.py").exists():
        return root
    for d in _ROOT_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, target in _ROOT_LINKS.items():
        if not (root / name).is_symlink():
            (root / name).symlink_to(target)
    for f in ("arca-vm/vmlinux", "arca-vm/initrd", "arca-vm/rootfs.img", "arca-vmm/vmm.py"):
        (root / f).touch()
    return root


class VmBackend(Backend):
    name = "vm"

    def _client(self) -> Any:
        if self.platform is not None:
            return self.platform
        from arca.host.simtee import client

        return client

    def check_host(self) -> None:
        from arca.host.backends.vm import assets

        try:
            assets.check_host()
            if not os.access(VMM_PYTHON, os.X_OK):
                raise assets.VmUnavailable(f"{VMM_PYTHON} missing: run scripts/setup.sh")
        except assets.VmUnavailable as e:
            raise BackendUnavailable(f"vm backend unavailable: {e}") from None

    def reference(self, inputs: LaunchInputs) -> Reference:
        from arca.host.backends.vm import assets, launch
        from arca.host.backends.vm.initramfs import ensure_initramfs
        from arca.host.backends.vm.rootfs import ensure_rootfs_image
        from arca.host.treedigest import rootfs_digest
        from arca.wire.descriptor import LaunchDescriptor

        kernel = assets.check_host()
        digest = rootfs_digest(inputs.rootfs)
        image = ensure_rootfs_image(inputs.rootfs, digest)
        initrd = ensure_initramfs(inputs.guest_runtime, kernel, strip_signatures=True)
        vcpus, memory = launch.shape_from_spec(dict(inputs.oci))
        descriptor = LaunchDescriptor(self.name, inputs.guest_runtime.digest, digest,
                                      inputs.process)
        extra = {
            "kernel_package": kernel.package, "kernel": launch.file_sha384(str(kernel.vmlinux)),
            "initrd": launch.file_sha384(str(initrd.path)), "initrd_sha256": initrd.digest,
            "rootfs_root_hash": image.root_hash, "rootfs_data_blocks": str(image.data_blocks),
            "vcpus": str(vcpus),
            # Host paths and guest RAM: used by prepare, not measured.
            "kernel_path": str(kernel.vmlinux), "initrd_path": str(initrd.path),
            "rootfs_path": str(image.path), "memory_mib": str(memory),
        }
        return self.reference_for(descriptor, inputs.init_data, extra)

    def reference_for(self, descriptor: LaunchDescriptor, init_data: bytes | None,
                      extra: Mapping[str, str]) -> Reference:
        import hashlib

        from arca.host.backends.vm import launch
        from arca.wire.jcs import canonicalize

        cmdline = launch.cmdline(f"{extra['rootfs_root_hash']}:{extra['rootfs_data_blocks']}",
                                 descriptor.measurement().hex())
        record = {"version": 1, "tee": self.name, "machine": launch.MACHINE,
                  "vcpus": int(extra["vcpus"]), "kernel": extra["kernel"],
                  "initrd": extra["initrd"], "cmdline": cmdline}
        measurement = hashlib.sha384(canonicalize(record)).hexdigest()
        return Reference(self.name, measurement, self.init_data_hash(init_data).hex(),
                         descriptor, {**extra, "cmdline": cmdline})

    def claims(self, ref: Reference) -> dict[str, str]:
        # What a verifier reports for the TD: the sim report's fields (the rest of ``extra``
        # is how the measurement was made, shown by ``arca measure``).
        return {"tee": ref.tee, "measurement": ref.measurement, "init_data": ref.init_data_hash}

    def platform_measurement(self, launch_json: dict[str, Any]) -> bytes:
        """The measurement the platform signs for a VM: computed from the files QEMU is
        handed, not taken from the runtime's word."""
        from arca.host.backends.vm.launch import Launch as VmLaunch

        return VmLaunch.from_json(launch_json).measurement()

    def prepare(self, launch: Launch, inputs: LaunchInputs, ref: Reference,
                config: dict[str, Any]) -> dict[str, Any]:
        from arca.host.backends.vm import assets
        from arca.host.backends.vm import launch as vl

        extra, td = ref.extra, launch.td_dir
        vm = vl.Launch(extra["kernel_path"], extra["initrd_path"], extra["rootfs_path"],
                       extra["cmdline"], int(extra["vcpus"]), int(extra["memory_mib"]))
        st.write_atomic(td / "descriptor.json", json.dumps(ref.descriptor.to_json()).encode(),
                        0o644)
        st.write_atomic(td / "process.json", json.dumps(config.get("process")).encode(), 0o644)
        if inputs.init_data is not None:
            st.write_atomic(td / "init-data.toml", inputs.init_data, 0o644)
        shares = shares_of(config)
        own = assets.virtiofsd() if shares else None
        own_virtiofsd = str(own) if own is not None else None
        argv = vl.host_io_args(vl.qemu_argv(assets.qemu_binary(), vm), _ports(config), shares,
                               vm.memory_mib)
        # The digests go to the guest, which measures its own command line and vCPUs with
        # them and refuses a report over another launch (arca.guest.vminit.launch_record).
        st.write_atomic(td / "launch.json", json.dumps(
            {"argv": argv, "kernel": extra["kernel"], "initrd": extra["initrd"],
             "volumes": [s.guest() for s in shares],
             "virtiofsd": [s.virtiofsd(vl.virtiofsd_prefix(own_virtiofsd), n)
                           for n, s in enumerate(shares)]}).encode(), 0o644)
        answer = self._client().register(launch.cid, ref.descriptor.to_json(), inputs.init_data,
                                         launch=vm.to_json())
        measured = answer.get("measurement") if isinstance(answer, dict) else None
        if measured is not None and measured != ref.measurement:
            raise ConfigError(f"vm {launch.cid}: the platform measured {measured[:16]}… but the "
                              f"reference is {ref.measurement[:16]}… (kernel or initramfs "
                              "changed during create)")
        return rewrite_config(config, td, vm, shares, own_virtiofsd)

    def exec_process(self, launch: Launch, process: dict[str, Any]) -> dict[str, Any] | None:
        """The VMM's exec client (``vmm.py exec PROCESS``) in place of ``process``: runc starts
        it in the VMM's container with the exec's stdio or terminal, pid file and signals; it
        hands ``process`` to the guest, which runs it only if the TD's measured policy allows
        it (ADR 0040). Runs as root in the VMM's container, like the VMM."""
        client = {k: v for k, v in process.items() if k not in ("args", "env", "cwd", "user")}
        client.update(args=[VMM_PYTHON, "-I", "-S", "/arca-vmm/vmm.py", "exec",
                            json.dumps(process)],
                      env=["PATH=/usr/bin:/bin"], cwd="/", user={"uid": 0, "gid": 0})
        return client

    def processes(self, cid: str, init_pid: int) -> list[dict[str, Any]] | None:
        """The guest's processes (ADR 0057), asked of the VMM on its exec socket (reached
        through the VMM's ``/proc/PID/root``: no process is started in its container), which
        relays the request to the guest; vminit answers only when the TD's measured policy
        sets ``allow_exec``, else one line naming it (:class:`PolicyDenied`)."""
        from arca.errors import StateError
        from arca.host.backends.vm import vmm
        from arca.wire.errors import PolicyDenied

        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(60)
        try:
            sock.connect(f"/proc/{init_pid}/root{vmm.EXEC_SOCKET}")
            lines, out = vmm.Lines(sock), b""
            lines.send({"ps": True})
            while (msgs := lines.recv()) is not None:
                for msg in msgs:
                    if msg.get("op") == "out":
                        out += base64.b64decode(msg["data"])
                    elif msg.get("op") == "exit" and msg.get("status"):
                        raise PolicyDenied(f"vm {cid}: {msg.get('error') or 'ps failed'}")
                    elif msg.get("op") == "exit":
                        listed = json.loads(out)
                        if not isinstance(listed, list):
                            break
                        return listed
        except (OSError, ValueError) as e:
            raise StateError(f"vm {cid}: the VM monitor did not list the guest's processes "
                             f"({e})") from None
        finally:
            sock.close()
        raise StateError(f"vm {cid}: the VM stopped before listing its processes")

    def undo(self, cid: str) -> None:
        self._client().unregister(cid)


def _ports(config: dict[str, Any]) -> list[tuple[str, int]]:
    from arca.host.annotations import ANNOTATION_PORTS
    from arca.host.backends.vm.launch import parse_ports

    value = (config.get("annotations") or {}).get(ANNOTATION_PORTS) or ""
    try:
        return parse_ports(str(value))
    except ValueError as e:
        raise InvalidInput(f"annotation {ANNOTATION_PORTS}: {e}") from None


def rewrite_config(config: dict[str, Any], td: pathlib.Path, vm: Any,
                   shares: list[Any] | None = None, own_virtiofsd: str | None = None
                   ) -> dict[str, Any]:
    """The VMM's container: read-only root of mount points, the VM's files bind-mounted
    read-only, the VMM as the process (the original process goes to the guest). ``shares``:
    the volumes (:func:`shares_of`), bind-mounted for the VMM's virtiofsd; ``None``: a backend
    that passes no volume to its guest, which refuses them."""
    from arca.host.backends.vm import launch as vl

    new: dict[str, Any] = json.loads(json.dumps(config))
    python = VMM_PYTHON
    kept = []
    for m in new.get("mounts") or []:
        if _is_bind(m) and not _plumbing(str(m.get("destination")), str(m.get("source"))):
            if shares is None:
                raise InvalidInput(f"mount {m.get('source')} -> {m.get('destination')} refused:"
                                   " volumes do not reach this backend's guest yet")
            continue  # a volume: its source goes to virtiofsd below, not to the VMM's root
        kept.append(m)
    ro = ["rbind", "ro", "nosuid", "nodev"]
    kept += [
        {"destination": "/usr", "type": "bind", "source": "/usr", "options": ro},
        {"destination": vl.IN_CONTAINER_KERNEL, "type": "bind", "source": vm.kernel,
         "options": ro},
        {"destination": vl.IN_CONTAINER_INITRD, "type": "bind", "source": vm.initrd,
         "options": ro},
        {"destination": vl.IN_CONTAINER_ROOTFS, "type": "bind", "source": vm.rootfs,
         "options": ro},
        {"destination": "/arca-vmm/vmm.py", "type": "bind",
         "source": str(pathlib.Path(__file__).with_name("vmm.py")), "options": ro},
        {"destination": vl.IN_CONTAINER_SCRATCH, "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=0700", "size=1m"]},
        {"destination": vl.IN_CONTAINER_TD, "type": "bind", "source": str(td),
         "options": ["rbind", "rw", "nosuid", "nodev", "noexec"]},
    ]
    kept += [s.container_mount(n) for n, s in enumerate(shares or [])]
    if shares and own_virtiofsd:
        kept.append({"destination": vl.IN_CONTAINER_VIRTIOFSD, "type": "bind",
                     "source": own_virtiofsd, "options": ro})
    new["mounts"] = kept
    new["root"] = {"path": str(vmm_root()), "readonly": True}
    proc = new["process"]
    proc["args"] = [python, "-I", "-S", "/arca-vmm/vmm.py"]
    proc["env"] = ["PATH=/usr/bin:/bin"]
    if os.environ.get("ARCA_VM_BOOT_TIMEOUT"):  # read by the VMM, whose env is only this
        proc["env"].append(f"ARCA_VM_BOOT_TIMEOUT={os.environ['ARCA_VM_BOOT_TIMEOUT']}")
    proc["cwd"] = "/"
    proc["user"] = {"uid": 0, "gid": 0}
    # process_madvise(MADV_PAGEOUT) of QEMU's initramfs mapping once the guest runs
    # (vmm.release_boot_images) needs CAP_SYS_NICE; QEMU gains only nice/scheduling rights.
    caps = proc.setdefault("capabilities", {})
    for kind in ("bounding", "effective", "permitted"):
        if "CAP_SYS_NICE" not in caps.setdefault(kind, []):
            caps[kind].append("CAP_SYS_NICE")
    return new


BACKEND = VmBackend
