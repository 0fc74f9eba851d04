"""What a ``vm`` TD is launched with, its measurement, and the QEMU command line.

The **launch measurement** is SHA-384 of the RFC 8785 form of::

    {"version": 1, "tee": "vm", "machine": "microvm", "vcpus": N,
     "kernel": "<sha384 hex of the vmlinux QEMU loads>",
     "initrd": "<sha384 hex of the initramfs>",
     "cmdline": "<the exact kernel command line>"}

The command line carries the rootfs root hash (``arca.root=<hash>:<data blocks>``) and the launch
descriptor's measurement (``arca.desc=<sha384 hex>``), so the launch measurement pins kernel,
guest code, rootfs and the process. Guest RAM is not measured (as on SNP/TDX, memory size does
not enter the launch digest); the vCPU count is (on SNP every vCPU's VMSA is).

:func:`qemu_argv` is the one place that builds QEMU's arguments; the ``tdx``/``snp`` launch path
extends it (machine type, firmware, confidential-guest objects) through :class:`Launch`'s
fields rather than by string edits.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from arca.wire.jcs import canonicalize

MACHINE = "microvm"
DEFAULT_MEMORY_MIB = 256
#: QEMU + TCG translation cache outside guest RAM (research §6.4: ~200 MB RSS); a container
#: memory limit must leave this much beside guest RAM or the VMM is OOM-killed.
VMM_OVERHEAD_MIB = 192
MIN_MEMORY_MIB = 128
#: TCG's translation cache. QEMU's default is 1 GiB, touched as guest code is translated: ~70
#: MiB resident after one container's boot and attestation here, and a long-running workload
#: keeps translating new code up to the full GiB. 32 MiB bounds it (a full cache is flushed
#: and refilled) for ~5-10% more CPU per boot (measured: docs/vm.md "Performance", ADR 0044).
TCG_TB_MIB = 32
ACCEL = f"tcg,tb-size={TCG_TB_MIB}"
#: TCG's default CPU model plus RDRAND (QEMU answers it from the host's getrandom): the guest
#: kernel trusts the CPU's RNG (``random.trust_cpu``), so its pool is ready at boot. Without it
#: the guest init's first read of entropy (Python's hash seed) waited ~1 s for jitter entropy
#: under TCG (ADR 0063). The host is trusted for ``vm`` anyway; a TD's RDRAND is the CPU's own.
CPU_MODEL = "qemu64,+rdrand"
#: Names of the virtio-serial ports (the guest finds them in /sys/class/virtio-ports).
PORT_CONTROL, PORT_STDOUT, PORT_STDERR = "arca.ctl", "arca.stdout", "arca.stderr"
#: Fixed paths inside the VMM's container (bind-mounted read-only by the runtime).
IN_CONTAINER_KERNEL = "/arca-vm/vmlinux"
#: The EFI-stub bzImage the TEE firmware boots (tdx/snp; microvm boots the PVH vmlinux).
IN_CONTAINER_KERNEL_BZ = "/arca-vm/vmlinuz"
IN_CONTAINER_INITRD = "/arca-vm/initrd"
IN_CONTAINER_ROOTFS = "/arca-vm/rootfs.img"
IN_CONTAINER_TD = "/run/arca-vm"
IN_CONTAINER_SCRATCH = "/run/vmm"


def file_sha384(path: str, _cache: dict[tuple[int, ...], str] = {}) -> str:  # noqa: B006
    """SHA-384 hex of a file; memoized by identity and change time within one process (the
    platform daemon hashes the same kernel for every VM)."""
    st = os.stat(path)
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if ident not in _cache:
        h = hashlib.sha384()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _cache[ident] = h.hexdigest()
    return _cache[ident]


def cmdline(root: str, descriptor_measurement: str) -> str:
    # quiet: the kernel's console is the log file, nothing reaches the workload's stdio.
    # panic=-1: a panicking guest reboots at once, and -no-reboot makes QEMU exit.
    # Timing under TCG on a loaded host is erratic; the guest must not depend on it:
    # tsc_early_khz (else it can hang calibrating the TSC: research §6.4, seen here too),
    # tsc=reliable and no_timer_check (else the IO-APIC timer check can hang or fail right
    # after "ACPI: Core revision", seen here at a load average of 8), as Kata's guests do.
    # cryptomgr.notests: skip the boot-time crypto self-tests (seconds under TCG).
    return ("console=ttyS0 quiet panic=-1 tsc_early_khz=2000000 tsc=reliable no_timer_check "
            f"cryptomgr.notests arca.root={root} "
            f"arca.desc={descriptor_measurement}")


@dataclass(frozen=True)
class Launch:
    """Host paths and the shape of one VM: everything the measurement covers, plus memory."""

    kernel: str
    initrd: str
    rootfs: str
    cmdline: str
    vcpus: int = 1
    memory_mib: int = DEFAULT_MEMORY_MIB
    machine: str = MACHINE
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, kernel_digest: str | None = None, initrd_digest: str | None = None
               ) -> dict[str, Any]:
        return {"version": 1, "tee": "vm", "machine": self.machine, "vcpus": self.vcpus,
                "kernel": kernel_digest or file_sha384(self.kernel),
                "initrd": initrd_digest or file_sha384(self.initrd), "cmdline": self.cmdline}

    def measurement(self) -> bytes:
        return hashlib.sha384(canonicalize(self.record())).digest()

    def to_json(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "initrd": self.initrd, "rootfs": self.rootfs,
                "cmdline": self.cmdline, "vcpus": self.vcpus, "memory_mib": self.memory_mib,
                "machine": self.machine}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Launch:
        return cls(str(obj["kernel"]), str(obj["initrd"]), str(obj["rootfs"]),
                   str(obj["cmdline"]), int(obj["vcpus"]), int(obj["memory_mib"]),
                   str(obj["machine"]))


def shape_from_spec(config: dict[str, Any]) -> tuple[int, int]:
    """(vCPUs, guest MiB) from the OCI spec's CPU and memory limits (defaults: 1, 256)."""
    res = (config.get("linux") or {}).get("resources") or {}
    cpu, mem = res.get("cpu") or {}, res.get("memory") or {}
    vcpus = 1
    if cpu.get("quota") and cpu.get("period"):
        vcpus = max(1, -(-int(cpu["quota"]) // int(cpu["period"])))
    memory = DEFAULT_MEMORY_MIB
    if mem.get("limit") and int(mem["limit"]) > 0:
        memory = max(MIN_MEMORY_MIB, min(DEFAULT_MEMORY_MIB,
                                         int(mem["limit"]) // (1 << 20) - VMM_OVERHEAD_MIB))
    return vcpus, memory


def qemu_argv(qemu: str, launch: Launch, *, accel: str = ACCEL) -> list[str]:
    """QEMU's arguments for ``launch``, with the in-container paths of its files."""
    td = IN_CONTAINER_TD
    return [
        qemu, "-M", f"{launch.machine},acpi=on,auto-kernel-cmdline=off", "-accel", accel,
        "-cpu", CPU_MODEL, "-smp", str(launch.vcpus), "-m", str(launch.memory_mib),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", IN_CONTAINER_KERNEL, "-initrd", IN_CONTAINER_INITRD,
        "-append", launch.cmdline,
        "-serial", f"file:{td}/console.log",
        "-drive", f"file={IN_CONTAINER_ROOTFS},if=none,id=root,format=raw,readonly=on",
        "-device", "virtio-blk-device,drive=root",
        # User-mode networking inside the container's network namespace: the guest reaches
        # what the container reaches (10.0.2.2 is the namespace's loopback), no host
        # privilege or device needed.
        "-netdev", "user,id=net",
        "-device", "virtio-net-device,netdev=net",
        "-object", "rng-random,id=rng,filename=/dev/urandom",
        "-device", "virtio-rng-device,rng=rng",
        "-device", "virtio-serial-device,max_ports=4",
        "-chardev", f"socket,id=ctl,path={IN_CONTAINER_SCRATCH}/ctl.sock",
        "-device", f"virtserialport,chardev=ctl,name={PORT_CONTROL}",
        # Plain files on the VMM's own stdout/stderr (the shim's pipes or the terminal): a
        # ``stdio`` chardev stops taking the guest's output once its stdin is at end of file
        # (seen here with /dev/null as stdin: the workload blocked on its first write).
        "-chardev", "file,id=out,path=/proc/self/fd/1,append=on",
        "-device", f"virtserialport,chardev=out,name={PORT_STDOUT}",
        "-chardev", "file,id=err,path=/proc/self/fd/2,append=on",
        "-device", f"virtserialport,chardev=err,name={PORT_STDERR}",
    ]


# -- What the host adds beside the measured launch: published ports and volumes (ADR 0042) ----
# Neither is measured: a published port is a way in that the host controls anyway (it owns the
# network), and a volume is untrusted data whose destination the guest checks against its
# measured init-data before anything runs (arca.guest.vminit.volume).

#: Volume sources and the Debian 12 virtiofsd inside the VMM's container (in its scratch tmpfs,
#: so runc makes their mount points there, not in the shared read-only root).
IN_CONTAINER_VOLUMES = IN_CONTAINER_SCRATCH + "/vol"
IN_CONTAINER_VIRTIOFSD = IN_CONTAINER_SCRATCH + "/virtiofsd"


@dataclass(frozen=True)
class Share:
    """A host directory the guest mounts with virtio-fs at ``destination`` (a ``-v`` volume).
    ``file``: the source is a file; the share is then a private directory of the VMM's
    container holding a bind mount of just that file, called ``file`` (ADR 0057): its
    siblings never reach the guest, which binds that one entry at ``destination``."""

    source: str
    destination: str
    readonly: bool
    tag: str
    file: bool = False

    def guest(self) -> dict[str, Any]:
        """What the guest is told (with its inputs) and checks before it mounts anything."""
        return {"tag": self.tag, "destination": self.destination, "readonly": self.readonly,
                "file": self.file}

    def container_mount(self, index: int) -> dict[str, Any]:
        """The bind that puts the source where this share's virtiofsd serves it."""
        where = f"{IN_CONTAINER_VOLUMES}/{index}" + ("/file" if self.file else "")
        return {"destination": where, "type": "bind", "source": self.source,
                "options": ["rbind", "ro" if self.readonly else "rw", "nosuid", "nodev"]}

    def virtiofsd(self, prefix: list[str], index: int) -> list[str]:
        """virtiofsd's arguments in the VMM's container (the VMM starts it before QEMU).
        ``chroot``: the container has no CAP_SYS_ADMIN for a namespace sandbox; the VMM's
        container is the outer one. No ``CAP_MKNOD`` (podman's default set has none, and the
        guest mounts volumes ``nodev``)."""
        return [*prefix, "--socket-path", f"{IN_CONTAINER_SCRATCH}/fs{index}.sock",
                "--shared-dir", f"{IN_CONTAINER_VOLUMES}/{index}", "--sandbox", "chroot",
                "--cache", "auto", "--modcaps=-mknod", "--log-level", "error",
                *(["--readonly"] if self.readonly else [])]


def parse_ports(value: str) -> list[tuple[str, int]]:
    """``tcp/8080,udp/53`` (the ``io.arca.ports`` annotation ``arca run -p`` sets) as
    (protocol, guest port) pairs."""
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        proto, _, num = item.partition("/")
        if proto not in ("tcp", "udp") or not num.isdigit() or not 0 < int(num) < 65536:
            raise ValueError(f"{item!r} is not PROTO/PORT (tcp or udp, 1-65535)")
        out.append((proto, int(num)))
    return out


def virtiofsd_prefix(own: str | None) -> list[str]:
    """How the VMM runs virtiofsd: the distribution's, or ``setup.sh``'s copy with its loader."""
    if own is None:
        return ["/usr/libexec/virtiofsd"]
    lib = f"{IN_CONTAINER_VIRTIOFSD}/lib"
    return [f"{lib}/ld-linux-x86-64.so.2", "--library-path", lib,
            f"{IN_CONTAINER_VIRTIOFSD}/virtiofsd"]


def host_io_args(argv: list[str], ports: list[tuple[str, int]], shares: list[Share],
                 memory_mib: int) -> list[str]:
    """``argv`` (:func:`qemu_argv`) with the published ports and the volumes' devices.

    Ports: ``hostfwd`` of QEMU's user-mode network listens in the VMM's network namespace on
    every address (for ``arca run``: the container's private one, which pasta connects to the
    host's ``-p HOST_PORT``) and connects to the guest's 10.0.2.15 on the same port.
    Volumes: one ``vhost-user-fs-device`` per share; virtiofsd maps guest RAM, so RAM becomes
    a shared memfd (only when there are volumes)."""
    out = list(argv)
    if ports:
        i = out.index("user,id=net")
        out[i] += "".join(f",hostfwd={proto}::{port}-:{port}" for proto, port in ports)
    if shares:
        i = out.index("-M") + 1
        out[i] += ",memory-backend=mem"
        out += ["-object", f"memory-backend-memfd,id=mem,size={memory_mib}M,share=on"]
        for n, s in enumerate(shares):
            out += ["-chardev", f"socket,id=fs{n},path={IN_CONTAINER_SCRATCH}/fs{n}.sock",
                    "-device", f"vhost-user-fs-device,chardev=fs{n},tag={s.tag}"]
    return out
