"""The ``snp`` backend: one AMD SEV-SNP guest (a small confidential VM) per container.

The ``vm`` launch plus QEMU's ``sev-snp-guest`` object (QEMU >= 9.1): ``kernel-hashes=on`` so
the launch digest covers kernel, initramfs and command line (which carries the rootfs root
hash and the descriptor digest), the init-data digest in HOST_DATA (zero-padded or cut to 32
bytes, base64: as Kata's govmm passes it and Trustee's SNP verifier compares it), the guest
policy, ``cbitpos`` from the host's CPUID (``reduced-phys-bits=1`` as Kata), the AmdSev OVMF
as ``-bios``, guest memory from ``memory-backend-memfd``. Reference value: the launch digest
(:mod:`.measure`, via ``sev-snp-measure``).

What it does not do: run without the hardware. ``host_problems`` names what this host lacks.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arca.host.backends import _confidential as cvm
from arca.host.backends.snp import measure
from arca.wire.errors import ConfigError, InvalidInput
from arca.wire.initdata import InitData

NAME = "snp"
#: HOST_DATA is 32 bytes (SEV-SNP ABI, ATTESTATION_REPORT offset 0xC0).
INIT_DATA_FIELD = 32
FACTS = cvm.HostFacts(
    label="AMD SEV-SNP", kvm_vm_type=4,  # KVM_X86_SNP_VM (linux/kvm.h)
    kvm_param="/sys/module/kvm_amd/parameters/sev_snp",
    kvm_hint="needs an AMD EPYC CPU with SEV-SNP enabled in the BIOS (SMEE, SNP, RMP table) "
             "and a kernel with KVM SEV-SNP host support",
    qemu_object="sev-snp-guest", qemu_min=(9, 1), firmware_package="ovmf-amdsev")
#: Guest policy: bit 17 must be 1, bit 16 allows SMT (QEMU's default, 0x30000). Bit 19 (DEBUG)
#: lets the host read guest memory and is refused here.
DEFAULT_POLICY = 0x30000
POLICY_DEBUG = 1 << 19
DEFAULTS = cvm.CvmSettings(
    firmware="/usr/share/ovmf/OVMF.amdsev.fd",
    extra={"policy": DEFAULT_POLICY, "cpu": measure.DEFAULT_CPU,
           "guest_features": measure.DEFAULT_GUEST_FEATURES, "cbitpos": 0})
EXTRA_TYPES: Mapping[str, type] = {"policy": int, "cpu": str, "guest_features": int,
                                   "cbitpos": int}
PINNED_CLAIMS = ("measurement", "init_data", "policy")
#: CPUID leaf 0x8000001F EBX[5:0]: the C-bit position (AMD APM vol. 3, "Memory Encryption").
CPUID_MEM_ENCRYPT = 0x8000001F
CPUID_DEVICE = "/dev/cpu/0/cpuid"


@dataclass(frozen=True)
class Reference:
    values: Mapping[str, str]
    cmdline: str


class SnpBackend:
    name = NAME

    def __init__(self, settings: cvm.CvmSettings = DEFAULTS) -> None:
        policy = int(settings.extra.get("policy", DEFAULT_POLICY))
        if policy & POLICY_DEBUG or not policy & (1 << 17) or not 0 <= policy < 1 << 64:
            raise ConfigError(f"snp policy {policy:#x} refused: bit 17 must be set and bit 19 "
                              "(DEBUG: the host could read guest memory) clear")
        self.settings = settings
        self.policy = policy

    @classmethod
    def from_config(cls, overrides: Mapping[str, Any] | None = None,
                    section: object = None) -> SnpBackend:
        """Settings from the runtime configuration's ``snp`` object, then ``overrides``."""
        return cls(cvm.load_settings(NAME, DEFAULTS, EXTRA_TYPES, overrides, section))

    def host_problems(self) -> list[str]:
        problems = (cvm.kvm_problems(FACTS) + cvm.qemu_problems(FACTS, self.settings.qemu)
                    + cvm.file_problems(self.settings, FACTS, _check_amdsev))
        if not problems:
            try:
                self.cbitpos()
            except ConfigError as e:
                problems.append(str(e))
        return problems

    def check_host(self) -> None:
        problems = self.host_problems()
        if problems:
            raise ConfigError(f"snp cannot start on this host: {problems[0]}",
                              tee=NAME, problems=problems)

    def cbitpos(self) -> int:
        configured = int(self.settings.extra.get("cbitpos") or 0)
        if configured:
            return configured
        try:
            fd = os.open(CPUID_DEVICE, os.O_RDONLY | os.O_CLOEXEC)
            try:
                regs = os.pread(fd, 16, CPUID_MEM_ENCRYPT)
            finally:
                os.close(fd)
        except OSError as e:
            raise ConfigError(f"cannot read the C-bit position from {CPUID_DEVICE} "
                              f"({e.strerror}; load the cpuid module or set snp.cbitpos)"
                              ) from None
        return int(struct.unpack("<4I", regs)[1] & 0x3F)

    def reference(self, cmdline: str, init_data: bytes | None,
                  settings: cvm.CvmSettings | None = None) -> Reference:
        s = settings or self.settings
        for what, path in (("firmware", s.firmware), ("kernel", s.kernel)):
            if not path:
                raise ConfigError(f"snp: no {what} configured")
        digest = measure.launch_digest(
            Path(s.firmware), Path(s.kernel), Path(s.initrd) if s.initrd else None, cmdline,
            vcpus=s.vcpus, cpu=str(s.extra.get("cpu", measure.DEFAULT_CPU)),
            guest_features=int(s.extra.get("guest_features", measure.DEFAULT_GUEST_FEATURES)))
        return Reference({"measurement": digest.hex(), "init_data": host_data(init_data).hex(),
                          "policy": f"0x{self.policy:016x}"}, cmdline)

    def claims(self, ref: Reference) -> dict[str, str]:
        return {k: ref.values[k] for k in PINNED_CLAIMS}

    def qemu_command(self, cmdline: str, init_data: bytes | None) -> list[str]:
        s = self.settings
        obj = ",".join([
            "sev-snp-guest", "id=tee0", f"cbitpos={self.cbitpos()}", "reduced-phys-bits=1",
            "kernel-hashes=on", f"policy={self.policy:#x}",
            f"host-data={base64.b64encode(host_data(init_data)).decode()}"])
        return cvm.qemu_command(s, cpu=str(s.extra.get("cpu", measure.DEFAULT_CPU)),
                                tee_object=obj, cmdline=cmdline,
                                memory_backend="memory-backend-memfd")


def host_data(init_data: bytes | None) -> bytes:
    """The init-data digest as HOST_DATA: cut or zero-padded to 32 bytes; zeros without."""
    if init_data is None:
        return bytes(INIT_DATA_FIELD)
    return InitData.parse(init_data).padded_digest(INIT_DATA_FIELD)


def _check_amdsev(fw: bytes) -> None:
    """The firmware must be the AmdSev build (SNP kernel-hashes section), or the launch
    digest would not cover kernel, initramfs and command line."""
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="arca-ovmf-") as f:
        f.write(fw)
        f.flush()
        try:
            measure.launch_digest(Path(f.name), Path(os.devnull), None, "")
        except InvalidInput as e:
            raise ConfigError(str(e).split(": ", 1)[-1]) from None
