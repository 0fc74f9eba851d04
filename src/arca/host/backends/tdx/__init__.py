"""The ``tdx`` backend: one Intel TDX trust domain (a small confidential VM) per container.

The ``vm`` launch plus QEMU's ``tdx-guest`` object (QEMU >= 10.1): the init-data digest in
MRCONFIGID (zero-padded to 48 bytes, base64: as Kata's govmm passes it and Trustee's TDX
verifier compares it), quotes through the host's quote generation service
(``quote-generation-socket``; the guest asks through configfs-tsm), the TDVF as ``-bios``,
KVM with ``kernel-irqchip=split``, ``-cpu host``. Reference values (:mod:`.measure`): MRTD,
RTMR1, RTMR2 (the measured command line: descriptor digest and rootfs root); RTMR0 is pinned
only when the operator gives it per platform (``rtmr0`` setting; docs/adr/0035).
``Reference.measurement`` is RTMR2, the register that covers the workload.

What it does not do: run without the hardware. ``host_problems`` names what this host lacks.
"""

from __future__ import annotations

import base64
from typing import Any

from arca.host.backends import _confidential as cvm
from arca.host.backends.tdx import measure
from arca.wire.errors import ConfigError, InvalidInput

NAME = "tdx"
FACTS = cvm.HostFacts(
    label="Intel TDX", kvm_vm_type=5,  # KVM_X86_TDX_VM (linux/kvm.h)
    kvm_param="/sys/module/kvm_intel/parameters/tdx",
    kvm_hint="needs an Intel CPU with TDX enabled in the BIOS, Linux >= 6.16 and "
             "kvm_intel.tdx=1",
    qemu_object="tdx-guest", qemu_min=(10, 1), firmware_package="ovmf-inteltdx")
DEFAULTS = cvm.CvmSettings(
    firmware="/usr/share/ovmf/OVMF.inteltdx.ms.fd",
    extra={"qgs_socket": "/var/run/tdx-qgs/qgs.socket", "rtmr0": ""})


class TdxBackend(cvm.ConfidentialVmBackend):
    name = NAME
    host_facts = FACTS
    defaults = DEFAULTS
    extra_types = {"qgs_socket": str, "rtmr0": str}
    measurement_claim = "rtmr2"
    #: What a release policy pins, in grant order; RTMR0 may be granted as "*".
    pinned = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "init_data")
    optional = ("rtmr0",)

    def host_sockets(self) -> tuple[str, ...]:
        """The quote generation service's socket, bind-mounted into the VMM's container."""
        qgs = str(self.settings.extra.get("qgs_socket") or "")
        return (qgs,) if qgs else ()

    def check_firmware(self, firmware: bytes) -> None:
        try:
            measure.tdvf_sections(firmware)
        except InvalidInput as e:
            raise ConfigError(str(e).removeprefix("firmware: ")) from None

    def launch_values(self, cmdline: str, init_data: bytes | None) -> dict[str, str]:
        """MRTD, RTMR0 (or ``*``), RTMR1, RTMR2 of a TD launched with these files."""
        s = self.settings
        fw, kernel, initrd = self.launch_files()
        rtmr0 = str(s.extra.get("rtmr0") or "")
        if rtmr0 and (len(rtmr0) != 96 or rtmr0.strip("0123456789abcdef")):
            raise InvalidInput("rtmr0 must be 96 lowercase hex characters")
        return {"mrtd": measure.mrtd(fw, s.firmware).hex(), "rtmr0": rtmr0 or "*",
                "rtmr1": measure.rtmr1(kernel).hex(), "rtmr2": measure.rtmr2(cmdline, initrd).hex()}

    def qemu_command(self, cmdline: str, init_data: bytes | None) -> list[str]:
        s = self.settings
        mrconfigid = base64.b64encode(self.init_data_hash(init_data)).decode()
        obj: dict[str, Any] = {"qom-type": "tdx-guest", "id": "tee0", "mrconfigid": mrconfigid}
        qgs = str(s.extra.get("qgs_socket") or "")
        if qgs:
            obj["quote-generation-socket"] = {"type": "unix", "path": qgs}
        return cvm.qemu_command(s, cpu="host", tee_object=obj, cmdline=cmdline)


BACKEND = TdxBackend
