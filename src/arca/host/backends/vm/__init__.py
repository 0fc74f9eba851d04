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

import json
import os
import pathlib

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


def _plumbing(destination: str) -> bool:
    """Binds an orchestrator adds to every container (``/sys``, ``/etc/resolv.conf``,
    ``/etc/hosts``, device nodes): they land in the VMM's container, where they are harmless;
    the guest never sees them. Any other bind is a volume meant for the workload."""
    return destination == "/sys" or destination.startswith(("/sys/", "/etc/", "/dev/",
                                                            "/proc/"))


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
                                 descriptor.measurement_hex())
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
        argv = vl.qemu_argv(assets.qemu_binary(), vm)
        # The digests go to the guest, which measures its own command line and vCPUs with
        # them and refuses a report over another launch (arca.guest.vminit.launch_record).
        st.write_atomic(td / "launch.json", json.dumps(
            {"argv": argv, "kernel": extra["kernel"], "initrd": extra["initrd"]}).encode(), 0o644)
        answer = self._client().register(launch.cid, ref.descriptor.to_json(), inputs.init_data,
                                         launch=vm.to_json())
        measured = answer.get("measurement") if isinstance(answer, dict) else None
        if measured is not None and measured != ref.measurement:
            raise ConfigError(f"vm {launch.cid}: the platform measured {measured[:16]}… but the "
                              f"reference is {ref.measurement[:16]}… (kernel or initramfs "
                              "changed during create)")
        return rewrite_config(config, td, vm)

    def undo(self, cid: str) -> None:
        self._client().unregister(cid)


def rewrite_config(config: dict[str, Any], td: pathlib.Path, vm: Any) -> dict[str, Any]:
    """The VMM's container: read-only root of mount points, the VM's files bind-mounted
    read-only, the VMM as the process (the original process goes to the guest)."""
    from arca.host.backends.vm import launch as vl

    new: dict[str, Any] = json.loads(json.dumps(config))
    python = VMM_PYTHON
    kept = []
    for m in new.get("mounts") or []:
        if m.get("type") == "bind" or "bind" in (m.get("options") or []) or \
                "rbind" in (m.get("options") or []):
            if _plumbing(str(m.get("destination"))):
                kept.append(m)
                continue
            raise InvalidInput(f"vm: mount {m.get('source')} -> {m.get('destination')} refused: "
                               "volumes do not reach a vm guest yet")
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
