"""The ``tdx`` backend: one Intel TDX trust domain (a small confidential VM) per container.

The ``vm`` launch plus QEMU's ``tdx-guest`` object (QEMU >= 10.1): the init-data digest in
MRCONFIGID (SHA-384, zero-padded to 48 bytes, base64: exactly as Kata's govmm passes it and
Trustee's TDX verifier compares it), quotes through the host's quote generation service
(``quote-generation-socket``; the guest asks through configfs-tsm), the TDVF as ``-bios``,
KVM with ``kernel_irqchip=split``. Reference values: MRTD, RTMR1, RTMR2 (:mod:`.measure`);
RTMR0 is pinned per platform when the operator gives it (docs/adr/0035).

What it does not do: run without the hardware. ``host_problems`` names what this host lacks.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arca.host.backends import _confidential as cvm
from arca.host.backends.tdx import measure
from arca.wire.errors import ConfigError, InvalidInput
from arca.wire.initdata import InitData

NAME = "tdx"
#: MRCONFIGID is 48 bytes (TDX module ABI, TDREPORT's TDINFO_STRUCT).
INIT_DATA_FIELD = 48
FACTS = cvm.HostFacts(
    label="Intel TDX", kvm_vm_type=5,  # KVM_X86_TDX_VM (linux/kvm.h)
    kvm_param="/sys/module/kvm_intel/parameters/tdx",
    kvm_hint="needs an Intel CPU with TDX enabled in the BIOS, Linux >= 6.16 and "
             "kvm_intel.tdx=1",
    qemu_object="tdx-guest", qemu_min=(10, 1), firmware_package="ovmf-inteltdx")
DEFAULTS = cvm.CvmSettings(
    firmware="/usr/share/ovmf/OVMF.inteltdx.ms.fd",
    extra={"qgs_socket": "/var/run/tdx-qgs/qgs.socket", "rtmr0": ""})
EXTRA_TYPES: Mapping[str, type] = {"qgs_socket": str, "rtmr0": str}
#: The claims a release policy pins, in grant order (see arca.host.policygen).
PINNED_CLAIMS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "init_data")
#: Claims a grant may leave open ("*"): RTMR0 unless the operator pins it (docs/adr/0035).
OPTIONAL_CLAIMS = ("rtmr0",)


@dataclass(frozen=True)
class Reference:
    values: Mapping[str, str]  # claim name -> lowercase hex ("*" = not pinned)
    cmdline: str


class TdxBackend:
    name = NAME

    def __init__(self, settings: cvm.CvmSettings = DEFAULTS) -> None:
        self.settings = settings

    @classmethod
    def from_config(cls, overrides: Mapping[str, Any] | None = None,
                    section: object = None) -> TdxBackend:
        """Settings from the runtime configuration's ``tdx`` object, then ``overrides``."""
        return cls(cvm.load_settings(NAME, DEFAULTS, EXTRA_TYPES, overrides, section))

    def host_problems(self) -> list[str]:
        """Every reason this host cannot run a TD, most fundamental first."""
        return (cvm.kvm_problems(FACTS) + cvm.qemu_problems(FACTS, self.settings.qemu)
                + cvm.file_problems(self.settings, FACTS, lambda fw: _check_tdvf(fw)))

    def check_host(self) -> None:
        problems = self.host_problems()
        if problems:
            raise ConfigError(f"tdx cannot start on this host: {problems[0]}",
                              tee=NAME, problems=problems)

    def reference(self, cmdline: str, init_data: bytes | None,
                  settings: cvm.CvmSettings | None = None) -> Reference:
        """MRTD, RTMR1, RTMR2 and MRCONFIGID of a TD launched with these files."""
        s = settings or self.settings
        fw, kernel = _read(s.firmware, "firmware"), _read(s.kernel, "kernel")
        initrd = _read(s.initrd, "initrd") if s.initrd else None
        rtmr0 = str(s.extra.get("rtmr0") or "")
        if rtmr0 and (len(rtmr0) != 96 or rtmr0.strip("0123456789abcdef")):
            raise InvalidInput("rtmr0 must be 96 lowercase hex characters")
        return Reference({
            "mrtd": measure.mrtd(fw, s.firmware).hex(),
            "rtmr0": rtmr0 or "*",
            "rtmr1": measure.rtmr1(kernel).hex(),
            "rtmr2": measure.rtmr2(cmdline, initrd).hex(),
            "init_data": mrconfigid(init_data).hex(),
        }, cmdline)

    def claims(self, ref: Reference) -> dict[str, str]:
        return {k: ref.values[k] for k in PINNED_CLAIMS}

    def qemu_command(self, cmdline: str, init_data: bytes | None) -> list[str]:
        s = self.settings
        obj: dict[str, Any] = {"qom-type": "tdx-guest", "id": "tee0",
                               "mrconfigid": base64.b64encode(mrconfigid(init_data)).decode()}
        qgs = str(s.extra.get("qgs_socket") or "")
        if qgs:
            obj["quote-generation-socket"] = {"type": "unix", "path": qgs}
        return cvm.qemu_command(s, cpu="host", tee_object=obj, cmdline=cmdline)


def mrconfigid(init_data: bytes | None) -> bytes:
    """The init-data digest as MRCONFIGID: zero-padded to 48 bytes; all zeros without."""
    if init_data is None:
        return bytes(INIT_DATA_FIELD)
    return InitData.parse(init_data).padded_digest(INIT_DATA_FIELD)


def _check_tdvf(fw: bytes) -> None:
    try:
        measure.tdvf_sections(fw)
    except InvalidInput as e:
        raise ConfigError(str(e).removeprefix("firmware: ")) from None


def _read(path: str, what: str) -> bytes:
    if not path:
        raise ConfigError(f"tdx: no {what} configured")
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InvalidInput(f"tdx {what} {path}: {e.strerror}") from None

