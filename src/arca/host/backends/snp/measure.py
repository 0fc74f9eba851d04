"""SEV-SNP reference value from files: the launch digest of a measured direct boot.

The digest is computed by ``sev-snp-measure`` (virtee; Apache-2.0), the maintained Python
implementation of the SNP ABI's page-info chain over the firmware's metadata pages, the
kernel-hashes page (SHA-256 of kernel, initrd, command line) and one VMSA per vCPU. Arca only
chooses its inputs, exactly those the launcher passes to QEMU: the AmdSev OVMF build, the
kernel, the initramfs, the ``-append`` string, the vCPU count, the vCPU model's CPUID signature
and the VMSA's SEV features (``guest_features``).

What it does not do: read the image (the backend builds the command line), or decide the
guest features a host's KVM sets (configuration; default in docs/adr/0035).
"""

from __future__ import annotations

import os
from pathlib import Path

from arca.wire.errors import InvalidInput

#: QEMU's default SNP vCPU model in Kata (research §1.1: EPYC-v4 "until QEMU cpu model 'host'
#: supports AMD SEV-SNP").
DEFAULT_CPU = "EPYC-v4"
#: VMSA SEV_FEATURES: SNPActive. QEMU >= 9.1 initialises SNP guests with KVM_SEV_INIT2 and no
#: extra VMSA features unless asked; 0x21 (plus DebugSwap) is what older KVM set by default.
DEFAULT_GUEST_FEATURES = 0x1
#: The vCPU count is bounded so a typo cannot make the VMSA loop run for minutes.
MAX_VCPUS = 512


def cpu_models() -> tuple[str, ...]:
    from sevsnpmeasure.vcpu_types import CPU_SIGS

    return tuple(CPU_SIGS)


def launch_digest(firmware: Path, kernel: Path, initrd: Path | None, cmdline: str, *,
                  vcpus: int = 1, cpu: str = DEFAULT_CPU,
                  guest_features: int = DEFAULT_GUEST_FEATURES) -> bytes:
    """The 48-byte MEASUREMENT an SNP report of this launch carries."""
    from sevsnpmeasure import guest
    from sevsnpmeasure.sev_mode import SevMode
    from sevsnpmeasure.vcpu_types import CPU_SIGS
    from sevsnpmeasure.vmm_types import VMMType

    if not 1 <= vcpus <= MAX_VCPUS:
        raise InvalidInput(f"vcpus must be 1..{MAX_VCPUS}, got {vcpus}")
    if cpu not in CPU_SIGS:
        raise InvalidInput(f"unknown SNP vCPU model {cpu!r} (known: {', '.join(CPU_SIGS)})")
    if not 0 <= guest_features < 1 << 64:
        raise InvalidInput(f"guest features must be a 64-bit value, got {guest_features:#x}")
    for what, path in (("firmware", firmware), ("kernel", kernel), ("initrd", initrd)):
        if path is not None and not os.access(path, os.R_OK):
            raise InvalidInput(f"SNP {what} {path}: not a readable file")
    try:
        digest = guest.calc_launch_digest(
            SevMode.SEV_SNP, vcpus, CPU_SIGS[cpu], str(firmware), str(kernel),
            str(initrd) if initrd is not None else "", cmdline, guest_features,
            vmm_type=VMMType.QEMU)
    except (RuntimeError, ValueError, KeyError, IndexError, OSError) as e:
        # sev-snp-measure reports a firmware without SNP metadata or kernel hashes as
        # RuntimeError ("OVMF metadata doesn't include SNP_KERNEL_HASHES section").
        raise InvalidInput(f"SNP launch digest over {firmware}: {e}") from None
    return bytes(digest)
