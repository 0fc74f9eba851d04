"""What the ``tdx`` and ``snp`` backends share: their base class, settings, the host checks,
and the q35 command line of a confidential VM. Each backend passes its own facts (QEMU object,
minimum QEMU version, KVM parameter, VM type); no TEE is named here.

* :class:`ConfidentialVmBackend`: the :class:`~arca.host.backends.base.Backend` both extend.
  ``reference_for`` puts the descriptor's digest (and the rootfs root, ``extra["rootfs_root"]``)
  on the measured kernel command line and asks the subclass for the hardware's launch values
  over firmware, kernel, initramfs and that line (``launch_values``); ``claims`` are what a
  release policy pins (``pinned``, in grant order; ``optional`` may be granted as ``*``).

* :class:`CvmSettings`: QEMU binary, firmware, kernel, initramfs, vCPUs, memory and the
  backend's own keys, from the ``tdx``/``snp`` object of the runtime configuration
  (``/etc/arca/runtime.json``), with defaults. Unknown keys and bad values are refused.
* :func:`host_problems`: every reason this host cannot start such a VM, most fundamental
  first (``/dev/kvm``, the KVM VM type and module parameter, QEMU's version and object,
  firmware, kernel, initramfs). ``check_host`` raises the first; ``arca doctor`` lists all.
* :func:`qemu_command`: ``q35`` + KVM + the firmware as ``-bios`` + direct kernel boot +
  the confidential-guest object, with KVM's ``kernel-irqchip=split`` (required by TDX, set by
  Kata for every confidential guest). Devices (console, channel, disks) are the launcher's.

What it does not do: start anything.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from arca.host.backends.base import Backend, BackendUnavailable, Launch, LaunchInputs, Reference
from arca.wire.descriptor import LaunchDescriptor
from arca.wire.errors import ConfigError

#: ``KVM_CHECK_EXTENSION`` (``_IO(KVMIO, 0x03)``) and the capabilities asked (linux/kvm.h).
KVM_CHECK_EXTENSION = 0xAE03
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_VM_TYPES = 235
#: QEMU answers ``--version`` and ``-object help`` in well under a second; a hung binary is
#: a host problem, reported as one.
QEMU_PROBE_SECONDS = 20.0
_VERSION = re.compile(rb"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class CvmSettings:
    """One confidential VM's launch settings (see :func:`settings_from_config`)."""

    qemu: str = "qemu-system-x86_64"
    firmware: str = ""
    kernel: str = ""
    initrd: str = ""
    vcpus: int = 1
    memory_mib: int = 512
    #: The kernel command line before Arca's measured parameters (see measured_cmdline).
    cmdline: str = "console=ttyS0 panic=-1 quiet"
    #: The backend's own keys (e.g. the SNP policy, the TDX quote generation socket).
    extra: Mapping[str, Any] = field(default_factory=dict)


def settings_from_config(section: object, defaults: CvmSettings, *, origin: str,
                         extra_types: Mapping[str, type]) -> CvmSettings:
    """``defaults`` overridden by a runtime-config object; one clear error per bad key."""
    if section is None:
        return defaults
    if not isinstance(section, dict):
        raise ConfigError(f"{origin} must be a JSON object")
    common = {f.name: f.type for f in fields(CvmSettings) if f.name != "extra"}
    values: dict[str, Any] = {}
    extra = dict(defaults.extra)
    for key, value in section.items():
        want = {"str": str, "int": int}.get(str(common[key])) if key in common else \
            extra_types.get(key)
        if want is None:
            raise ConfigError(f"{origin}: unknown key {key!r} (known: "
                              f"{', '.join(sorted([*common, *extra_types]))})")
        if type(value) is not want or (want is str and not value and key != "cmdline"):
            raise ConfigError(f"{origin}: {key!r} must be a "
                              f"{'non-empty string' if want is str else 'integer'}")
        (values if key in common else extra)[key] = value
    out = replace(defaults, **values, extra=extra)
    if not 1 <= out.vcpus <= 512:
        raise ConfigError(f"{origin}: vcpus must be 1..512, got {out.vcpus}")
    if not 128 <= out.memory_mib <= 4 * 1024 * 1024:
        raise ConfigError(f"{origin}: memory_mib must be 128..4194304, got {out.memory_mib}")
    return out


def load_settings(name: str, defaults: CvmSettings, extra_types: Mapping[str, type],
                  overrides: Mapping[str, Any] | None = None,
                  section: object = None) -> CvmSettings:
    """The backend's settings: defaults, then the runtime configuration's ``name`` object
    (read when ``section`` is None), then ``overrides`` (command-line options)."""
    section = runtime_section(name) if section is None else section
    settings = settings_from_config(section, defaults, origin=f"runtime config {name!r}",
                                    extra_types=extra_types)
    if overrides:
        settings = settings_from_config(dict(overrides), settings, origin="options",
                                        extra_types=extra_types)
    return settings


def runtime_section(name: str, environ: Mapping[str, str] | None = None) -> object:
    """The ``name`` object of the runtime configuration file (``$ARCA_RUNTIME_CONFIG`` or
    ``/etc/arca/runtime.json``; the file as a whole is validated by
    :func:`arca.host.runtime.config.load_config`), or None."""
    from arca.host.runtime.config import DEFAULT_CONFIG_PATH

    path = (os.environ if environ is None else environ).get("ARCA_RUNTIME_CONFIG",
                                                             DEFAULT_CONFIG_PATH)
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read runtime config {path}: {e}") from None
    return obj.get(name) if isinstance(obj, dict) else None


# -- host checks ------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostFacts:
    """What one backend needs of the host (its entries in the per-TEE facts)."""

    label: str               # "Intel TDX" / "AMD SEV-SNP"
    kvm_vm_type: int         # KVM_X86_TDX_VM / KVM_X86_SNP_VM
    kvm_param: str           # /sys/module/<kvm module>/parameters/<param>
    kvm_hint: str            # how an operator enables it
    qemu_object: str         # tdx-guest / sev-snp-guest
    qemu_min: tuple[int, int]
    firmware_package: str    # the distribution package that ships the firmware


def kvm_problems(facts: HostFacts, dev: str = "/dev/kvm",
                 sysfs: Callable[[str], str | None] | None = None) -> list[str]:
    read = sysfs or _read_text
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return [f"no {dev}: this host offers no KVM (bare metal with {facts.label} and the "
                "KVM module loaded is required)"]
    except OSError as e:
        return [f"cannot open {dev}: {e.strerror}"]
    problems = []
    try:
        try:
            types = fcntl.ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES)
        except OSError:
            types = 0
        if not types & (1 << facts.kvm_vm_type):
            offered = [str(t) for t in range(32) if types & (1 << t)] or ["none reported"]
            problems.append(f"KVM cannot create {facts.label} guests: its VM types are "
                            f"{{{', '.join(offered)}}}, type {facts.kvm_vm_type} is missing "
                            f"({facts.kvm_hint})")
        else:
            try:
                memfd = fcntl.ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD)
            except OSError:
                memfd = 0
            if not memfd:
                problems.append("KVM offers no guest_memfd (KVM_CAP_GUEST_MEMFD), which QEMU "
                                "requires for private guest memory")
    finally:
        os.close(fd)
    value = read(facts.kvm_param)
    if value is None:
        problems.append(f"{facts.label} is not enabled in KVM: {facts.kvm_param} does not "
                        "exist" + ("" if problems else f" ({facts.kvm_hint})"))
    elif value.strip() not in ("Y", "1"):
        problems.append(f"{facts.label} is not enabled in KVM: {facts.kvm_param} is "
                        f"{value.strip()!r}" + ("" if problems else f" ({facts.kvm_hint})"))
    return problems


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def qemu_version(binary: str) -> tuple[int, int, int]:
    """``qemu-system-x86_64 --version`` → (major, minor, micro); ConfigError when unusable."""
    path = shutil.which(binary)
    if path is None:
        raise ConfigError(f"QEMU {binary!r} not found (install qemu-system-x86)")
    out = _run([path, "--version"])
    m = _VERSION.search(out)
    if m is None:
        raise ConfigError(f"{path} --version does not name a QEMU version")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def qemu_object_properties(binary: str, qom_type: str) -> frozenset[str]:
    """The properties ``-object TYPE,help`` lists; empty when QEMU lacks the type."""
    out = _run([binary, "-nodefaults", "-machine", "none", "-object", f"{qom_type},help"],
               check=False)
    props = set()
    for line in out.decode(errors="replace").splitlines():
        m = re.match(r"\s+([a-z][a-z0-9-]*)=<", line)
        if m:
            props.add(m[1])
    return frozenset(props)


def _run(argv: list[str], *, check: bool = True) -> bytes:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=QEMU_PROBE_SECONDS,
                              check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"cannot run {argv[0]}: {e}") from None
    if check and proc.returncode != 0:
        raise ConfigError(f"{' '.join(argv)} failed: "
                          f"{proc.stderr.decode(errors='replace').strip()[:200]}")
    return proc.stdout + proc.stderr


def qemu_problems(facts: HostFacts, binary: str) -> list[str]:
    try:
        version = qemu_version(binary)
    except ConfigError as e:
        return [str(e)]
    shown = ".".join(map(str, version))
    if version[:2] < facts.qemu_min:
        need = ".".join(map(str, facts.qemu_min))
        return [f"QEMU {shown} ({binary}) is too old for {facts.label}: {facts.qemu_object} "
                f"needs QEMU >= {need}"]
    if not qemu_object_properties(binary, facts.qemu_object):
        return [f"QEMU {shown} ({binary}) has no {facts.qemu_object} object"]
    return []


def file_problems(settings: CvmSettings, facts: HostFacts,
                  firmware_check: Callable[[bytes], None]) -> list[str]:
    problems = []
    if not settings.firmware:
        problems.append(f"no firmware configured for {facts.label} (install "
                        f"{facts.firmware_package})")
    else:
        try:
            data = Path(settings.firmware).read_bytes()
        except OSError as e:
            problems.append(f"firmware {settings.firmware}: {e.strerror} (install "
                            f"{facts.firmware_package})")
        else:
            try:
                firmware_check(data)
            except (ConfigError, ValueError) as e:
                problems.append(f"firmware {settings.firmware}: {e}")
    for what, path in (("guest kernel", settings.kernel), ("guest initramfs", settings.initrd)):
        if not path:  # the initramfs: built per guest runtime unless one is configured
            if what == "guest kernel":
                problems.append(f"no {what} configured")
        elif not os.access(path, os.R_OK):
            problems.append(f"{what} {path} is missing or unreadable")
    return problems


# -- the command line -------------------------------------------------------------------------

def qemu_command(settings: CvmSettings, *, cpu: str, tee_object: str | dict[str, Any],
                 cmdline: str, memory_backend: str | None = None) -> list[str]:
    """QEMU's arguments for a confidential direct-boot VM (no devices). ``tee_object`` is the
    ``-object`` value (key=value form, or a dict for QEMU's JSON form, needed for
    structured properties such as a socket address); its ``id`` must be ``tee0``."""
    machine = "q35,confidential-guest-support=tee0"
    argv = [settings.qemu, "-nodefaults", "-no-user-config", "-display", "none",
            "-accel", "kvm,kernel-irqchip=split", "-machine", machine, "-cpu", cpu,
            "-smp", str(settings.vcpus), "-m", f"{settings.memory_mib}M"]
    if memory_backend is not None:
        argv[argv.index(machine)] = machine + ",memory-backend=mem0"
        argv += ["-object", f"{memory_backend},id=mem0,size={settings.memory_mib}M"]
    obj = tee_object if isinstance(tee_object, str) else json.dumps(tee_object,
                                                                    separators=(",", ":"))
    argv += ["-object", obj, "-bios", settings.firmware,
             "-kernel", settings.kernel, "-initrd", settings.initrd, "-append", cmdline]
    return argv


def object_properties(argv: list[str]) -> dict[str, set[str]]:
    """Every ``-object`` of a command line: QOM type → the properties it sets (for tests and
    ``arca doctor`` to hold them against what the installed QEMU reports)."""
    out: dict[str, set[str]] = {}
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag != "-object":
            continue
        if value.startswith("{"):
            obj = json.loads(value)
            qom, props = obj.pop("qom-type"), set(obj)
        else:
            qom, *rest = value.split(",")
            props = {kv.split("=", 1)[0] for kv in rest}
        out.setdefault(qom, set()).update(props - {"id"})
    return out


def read_input(tee: str, what: str, path: str, package: str) -> bytes:
    """A launch input file for reference values; missing or unreadable is a configuration
    error naming the file and how to provide it."""
    input_readable(tee, what, path, package)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _input_error(tee, what, path, package, e.strerror or str(e)) from None


def input_readable(tee: str, what: str, path: str, package: str) -> None:
    if not path:
        raise ConfigError(f"{tee} reference values are not supported with this configuration: "
                          f"no {what} configured (runtime config {tee!r} or --{what})")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise _input_error(tee, what, path, package, "missing or unreadable")


def _input_error(tee: str, what: str, path: str, package: str, why: str) -> ConfigError:
    hint = f" (install {package})" if package else ""
    return ConfigError(f"{tee} reference values are not supported with this configuration: "
                       f"{what} {path}: {why}{hint}")


def measured_cmdline(base: str, descriptor_digest: str, rootfs_root: str | None) -> str:
    """The kernel command line the hardware measures: the base line, the rootfs dm-verity
    root (``<root hash>:<hash offset>``) and the launch descriptor's digest, in the ``vm``
    launcher's spelling (``arca.root=``, ``arca.desc=``), so the measurement covers the image
    and the process."""
    if not re.fullmatch(r"[0-9a-f]{64,128}", descriptor_digest):
        raise ValueError(f"descriptor digest must be lowercase hex, got {descriptor_digest!r}")
    if rootfs_root is not None and not re.fullmatch(r"[0-9a-f]{64}(:[0-9]{1,20})?",
                                                    rootfs_root):
        raise ValueError(f"rootfs root must be HASH[:OFFSET], got {rootfs_root!r}")
    parts = [base.strip()] if base.strip() else []
    if rootfs_root:
        parts.append(f"arca.root={rootfs_root}")
    parts.append(f"arca.desc={descriptor_digest}")
    return " ".join(parts)


# -- the base class ---------------------------------------------------------------------------

class ConfidentialVmBackend(Backend):
    """A confidential VM per container; see the module docstring. Subclasses set the class
    attributes and implement ``launch_values`` and ``qemu_command``."""

    host_facts: HostFacts
    defaults: CvmSettings
    extra_types: Mapping[str, type] = {}
    #: The claim ``Reference.measurement`` shows.
    measurement_claim = ""

    def __init__(self, platform: Any = None, settings: CvmSettings | None = None) -> None:
        super().__init__(platform)
        self._settings = settings

    @property
    def settings(self) -> CvmSettings:
        """Defaults, then the runtime configuration's object of this backend's name."""
        if self._settings is None:
            settings = load_settings(self.name, self.defaults, self.extra_types)
            if not settings.kernel:  # the vm backend's guest kernel, as its bzImage
                from arca.host.backends.vm import assets

                settings = replace(settings, kernel=str(assets.data_dir() / "vmlinuz"))
            self._settings = settings
        return self._settings

    def configure(self, options: Mapping[str, Any]) -> ConfidentialVmBackend:
        """This backend with ``options`` (e.g. ``arca measure --vcpus``) over its settings."""
        settings = settings_from_config(dict(options), self.settings, origin="options",
                                        extra_types=self.extra_types)
        configured = type(self)(self.platform, settings)  # the subclass's own checks first
        for what, path, package in (("firmware", settings.firmware,
                                     self.host_facts.firmware_package),
                                    ("kernel", settings.kernel, ""),
                                    ("initrd", settings.initrd, "")):
            if path or what != "initrd":  # refuse missing inputs before any image work
                input_readable(self.name, what, path, package)
        return configured

    def host_problems(self, *, first_only: bool = False) -> list[str]:
        """Every reason this host cannot launch the TEE, most fundamental first (or just the
        first: ``create`` needs no more)."""
        s = self.settings
        problems = kvm_problems(self.host_facts)
        if problems and first_only:
            return problems
        problems += qemu_problems(self.host_facts, s.qemu)
        if problems and first_only:
            return problems
        problems += file_problems(s, self.host_facts, self.check_firmware)
        from arca.host.backends.vm import assets

        try:  # the vm launch's parts: rootfs image tools, initramfs modules
            assets.check_host()
        except assets.VmUnavailable as e:
            problems.append(str(e))
        return problems

    def check_host(self) -> None:
        problems = self.host_problems(first_only=True)
        if problems:
            raise BackendUnavailable(f"TEE {self.name!r} is not available on this host: "
                                     f"{problems[0]}",
                                     tee=self.name, problems=problems)

    def check_firmware(self, firmware: bytes) -> None:
        raise NotImplementedError

    def launch_values(self, cmdline: str, init_data: bytes | None) -> dict[str, str]:
        raise NotImplementedError

    def launch_files(self) -> tuple[bytes, bytes, bytes | None]:
        """The configured firmware, kernel and initramfs (None when none is configured), for
        :meth:`launch_values`; missing or unreadable is a ConfigError naming the file."""
        s = self.settings
        return (read_input(self.name, "firmware", s.firmware, self.host_facts.firmware_package),
                read_input(self.name, "kernel", s.kernel, ""),
                read_input(self.name, "initrd", s.initrd, "") if s.initrd else None)

    def qemu_command(self, cmdline: str, init_data: bytes | None) -> list[str]:
        raise NotImplementedError

    def reference(self, inputs: LaunchInputs) -> Reference:
        """The ``vm`` launch's parts (dm-verity rootfs image, the initramfs built for this
        guest runtime unless one is configured) under the hardware's measurement."""
        from arca.host.backends.vm import assets
        from arca.host.backends.vm.initramfs import ensure_initramfs
        from arca.host.backends.vm.rootfs import ensure_rootfs_image
        from arca.host.treedigest import rootfs_digest

        digest = rootfs_digest(inputs.rootfs)
        image = ensure_rootfs_image(inputs.rootfs, digest)
        initrd = self.settings.initrd or str(
            ensure_initramfs(inputs.guest_runtime, assets.Kernel(assets.data_dir())).path)
        descriptor = LaunchDescriptor(self.name, inputs.guest_runtime.digest, digest,
                                      inputs.process)
        return self.reference_for(descriptor, inputs.init_data, {
            "rootfs_root": image.cmdline_value(), "rootfs_path": str(image.path),
            "initrd_path": initrd})

    def reference_for(self, descriptor: LaunchDescriptor, init_data: bytes | None,
                      extra: Mapping[str, str]) -> Reference:
        cmdline = measured_cmdline(self.settings.cmdline, descriptor.measurement().hex(),
                                   extra.get("rootfs_root"))
        backend = self
        if extra.get("initrd_path") and extra["initrd_path"] != self.settings.initrd:
            backend = type(self)(self.platform, replace(self.settings,
                                                        initrd=extra["initrd_path"]))
        values = backend.launch_values(cmdline, init_data)
        return Reference(self.name, values[self.measurement_claim],
                         self.init_data_hash(init_data).hex(), descriptor,
                         {**extra, **values, "cmdline": cmdline})

    def claims(self, ref: Reference) -> dict[str, str]:
        values = {**ref.extra, "init_data": ref.init_data_hash}
        return {"tee": ref.tee, **{k: values[k] for k in self.pinned}}

    # -- the launch: the vm backend's VMM container, a confidential q35 VM in it ------------

    #: Device nodes the VMM needs beyond /dev/kvm (SNP: /dev/sev), and host sockets
    #: (TDX: the quote generation service) bind-mounted at the same path.
    host_devices: tuple[str, ...] = ("/dev/kvm",)

    def host_sockets(self) -> tuple[str, ...]:
        return ()

    def launch_argv(self, cmdline: str, init_data: bytes | None) -> list[str]:
        """QEMU's full arguments inside the VMM container: the confidential q35 machine
        (``qemu_command`` with the in-container paths) plus the ``vm`` launch's devices on
        PCI (q35 has no virtio-mmio) and its console, control and stdio ports."""
        from arca.host.backends.vm import launch as vl

        inside = replace(self.settings, firmware=IN_CONTAINER_FIRMWARE,
                         kernel=vl.IN_CONTAINER_KERNEL_BZ, initrd=vl.IN_CONTAINER_INITRD)
        argv = type(self)(self.platform, inside).qemu_command(cmdline, init_data)
        td, scratch = vl.IN_CONTAINER_TD, vl.IN_CONTAINER_SCRATCH
        return argv + [
            "-no-reboot", "-serial", f"file:{td}/console.log",
            "-drive", f"file={vl.IN_CONTAINER_ROOTFS},if=none,id=root,format=raw,readonly=on",
            "-device", "virtio-blk-pci,drive=root",
            "-netdev", "user,id=net", "-device", "virtio-net-pci,netdev=net",
            "-object", "rng-random,id=rng,filename=/dev/urandom",
            "-device", "virtio-rng-pci,rng=rng",
            "-device", "virtio-serial-pci,max_ports=4",
            "-chardev", f"socket,id=ctl,path={scratch}/ctl.sock",
            "-device", f"virtserialport,chardev=ctl,name={vl.PORT_CONTROL}",
            "-chardev", "file,id=out,path=/proc/self/fd/1,append=on",
            "-device", f"virtserialport,chardev=out,name={vl.PORT_STDOUT}",
            "-chardev", "file,id=err,path=/proc/self/fd/2,append=on",
            "-device", f"virtserialport,chardev=err,name={vl.PORT_STDERR}",
        ]

    def prepare(self, launch: Launch, inputs: LaunchInputs, ref: Reference,
                config: dict[str, Any]) -> dict[str, Any]:
        """The ``vm`` backend's VMM container (QEMU as the container's process, kernel,
        initramfs and rootfs image bind-mounted read-only), with the TEE firmware, the KVM and
        TEE device nodes and the host's TEE sockets added. No sim platform: the hardware
        measures the launch and the guest asks it through configfs-tsm."""
        from arca.host.backends.vm import launch as vl
        from arca.host.backends.vm import rewrite_config, vmm_root
        from arca.host.runtime import state as st

        extra, td, s = ref.extra, launch.td_dir, self.settings
        vm = vl.Launch(s.kernel, extra["initrd_path"], extra["rootfs_path"], extra["cmdline"],
                       s.vcpus, s.memory_mib, machine="q35")
        st.write_atomic(td / "descriptor.json", json.dumps(ref.descriptor.to_json()).encode(),
                        0o644)
        st.write_atomic(td / "process.json", json.dumps(config.get("process")).encode(), 0o644)
        if inputs.init_data is not None:
            st.write_atomic(td / "init-data.toml", inputs.init_data, 0o644)
        argv = self.launch_argv(extra["cmdline"], inputs.init_data)
        st.write_atomic(td / "launch.json", json.dumps({"argv": argv}).encode(), 0o644)
        new = rewrite_config(config, td, vm)
        root = vmm_root()
        ro = ["rbind", "ro", "nosuid", "nodev"]
        for dest, source in ((vl.IN_CONTAINER_KERNEL_BZ, s.kernel),
                             (IN_CONTAINER_FIRMWARE, s.firmware)):
            (root / dest.lstrip("/")).touch()  # a mount point in the read-only root
            new["mounts"].append({"destination": dest, "type": "bind", "source": source,
                                  "options": ro})
        for sock in self.host_sockets():
            new["mounts"].append({"destination": sock, "type": "bind", "source": sock,
                                  "options": ["rbind", "rw", "nosuid", "nodev", "noexec"]})
        linux = new.setdefault("linux", {})
        rules = linux.setdefault("resources", {}).setdefault("devices", [])
        for dev in self.host_devices:
            try:
                info = os.stat(dev)
            except OSError as e:
                raise BackendUnavailable(f"{self.name}: {dev}: {e.strerror}") from None
            major, minor = os.major(info.st_rdev), os.minor(info.st_rdev)
            linux.setdefault("devices", []).append(
                {"path": dev, "type": "c", "major": major, "minor": minor,
                 "fileMode": 0o600, "uid": 0, "gid": 0})
            rules.append({"allow": True, "type": "c", "major": major, "minor": minor,
                          "access": "rw"})
        return new

    def undo(self, cid: str) -> None:
        """``prepare`` registers nothing outside the TD directory (the runtime removes it)."""


#: The TEE firmware inside the VMM container (bind-mounted read-only).
IN_CONTAINER_FIRMWARE = "/arca-vm/firmware.fd"
