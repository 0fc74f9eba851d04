"""The ``snp`` backend: one AMD SEV-SNP guest (a small confidential VM) per container.

The ``vm`` launch plus QEMU's ``sev-snp-guest`` object (QEMU >= 9.1): ``kernel-hashes=on`` so
the launch digest covers kernel, initramfs and command line (which carries the descriptor
digest and the rootfs root), the init-data digest in HOST_DATA (cut or zero-padded to 32
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
import tempfile
from pathlib import Path
from typing import Any

from arca.host.backends import _confidential as cvm
from arca.host.backends.snp import measure
from arca.wire.errors import ConfigError, InvalidInput

NAME = "snp"
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
#: CPUID leaf 0x8000001F EBX[5:0]: the C-bit position (AMD APM vol. 3, "Memory Encryption").
CPUID_MEM_ENCRYPT = 0x8000001F
CPUID_DEVICE = "/dev/cpu/0/cpuid"


class SnpBackend(cvm.ConfidentialVmBackend):
    name = NAME
    host_facts = FACTS
    defaults = DEFAULTS
    extra_types = {"policy": int, "cpu": str, "guest_features": int, "cbitpos": int}
    measurement_claim = "measurement"
    #: QEMU opens the SEV firmware device (sev-snp-guest's sev-device default) besides KVM.
    host_devices = ("/dev/kvm", "/dev/sev")
    pinned = ("measurement", "init_data", "policy")
    #: REPORTED_TCB components (SEV-SNP ABI, TCB_VERSION; fmc on Turin).
    tcb_components = ("bootloader", "tee", "snp", "microcode", "fmc")

    def __init__(self, platform: Any = None, settings: cvm.CvmSettings | None = None) -> None:
        super().__init__(platform, settings)
        if settings is not None:
            self.policy  # noqa: B018 - refuse a bad policy when configured, not at launch

    @property
    def policy(self) -> int:
        policy = int(self.settings.extra.get("policy", DEFAULT_POLICY))
        if not 0 <= policy < 1 << 64 or policy & POLICY_DEBUG or not policy & (1 << 17):
            raise ConfigError(f"snp policy {policy:#x} refused: bit 17 must be set and bit 19 "
                              "(DEBUG: the host could read guest memory) clear")
        return policy

    def host_problems(self, *, first_only: bool = False) -> list[str]:
        problems = super().host_problems(first_only=first_only)
        if not problems:
            try:
                self.cbitpos()
            except ConfigError as e:
                problems.append(str(e))
        return problems

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

    def check_firmware(self, firmware: bytes) -> None:
        """The AmdSev build (SNP kernel-hashes section), or the launch digest would not cover
        kernel, initramfs and command line."""
        with tempfile.NamedTemporaryFile(prefix="arca-ovmf-") as f:
            f.write(firmware)
            f.flush()
            try:
                measure.launch_digest(Path(f.name), Path(os.devnull), None, "")
            except InvalidInput as e:
                raise ConfigError(str(e).split(": ", 1)[-1]) from None

    def launch_values(self, cmdline: str, init_data: bytes | None) -> dict[str, str]:
        s = self.settings
        self.launch_files()  # each readable, else a ConfigError naming it; measured by path
        digest = measure.launch_digest(
            Path(s.firmware), Path(s.kernel), Path(s.initrd) if s.initrd else None, cmdline,
            vcpus=s.vcpus, cpu=str(s.extra.get("cpu", measure.DEFAULT_CPU)),
            guest_features=int(s.extra.get("guest_features", measure.DEFAULT_GUEST_FEATURES)))
        return {"measurement": digest.hex(), "policy": f"0x{self.policy:016x}"}

    def qemu_command(self, cmdline: str, init_data: bytes | None) -> list[str]:
        s = self.settings
        obj = ",".join([
            "sev-snp-guest", "id=tee0", f"cbitpos={self.cbitpos()}", "reduced-phys-bits=1",
            "kernel-hashes=on", f"policy={self.policy:#x}",
            f"host-data={base64.b64encode(self.init_data_hash(init_data)).decode()}"])
        return cvm.qemu_command(s, cpu=str(s.extra.get("cpu", measure.DEFAULT_CPU)),
                                tee_object=obj, cmdline=cmdline,
                                memory_backend="memory-backend-memfd")


BACKEND = SnpBackend
