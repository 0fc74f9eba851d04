"""Parser of the AMD SEV-SNP ``ATTESTATION_REPORT`` (report versions 2 to 5).

What it does: turns the 1184-byte report into a frozen, typed :class:`SnpReport`, decodes the
guest policy, platform info, key info and TCB versions, and exposes the signed region
(0x000-0x29F) and the ECDSA P-384 signature as integers. It never trusts a field to size
anything: the report has one fixed size and every offset below is a constant. It refuses what
it cannot read: reserved bytes of the report's version that are not zero, POLICY or KEY_INFO
reserved bits, a VMPL no guest runs at (ADR 0062).

What it does not do: check the signature, the certificate chain or any binding; that is
:mod:`arca.verifier.snp.verifier`.

Layout: AMD "SEV Secure Nested Paging Firmware ABI Specification" (pub. 56860), Table 23
"ATTESTATION_REPORT Structure" (rev. 1.55+: CPUID fields from version 3; rev. 1.58:
LAUNCH_MIT_VECTOR / CURRENT_MIT_VECTOR from version 5), Table 3 "TCB_VERSION" (Milan, Genoa)
and its Turin variant (FMC first), Table 9 "Guest Policy", Table 24 "Signature" (Chapter 10).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from arca.errors import MalformedEvidence

#: The report is a fixed-size structure (ABI spec Table 23).
REPORT_SIZE = 0x4A0
#: The signature covers bytes 0x000-0x29F inclusive.
SIGNED_SIZE = 0x2A0
#: Report versions this parser knows the layout of. Version 2 is the first SNP release;
#: version 3 adds CPUID_FAM_ID/MOD_ID/STEP; version 4 keeps the version 3 layout; version 5
#: adds the mitigation vectors.
SUPPORTED_VERSIONS = (2, 3, 4, 5)
#: SIGNATURE_ALGO value for ECDSA P-384 with SHA-384 (ABI spec Chapter 10, Table 141).
SIG_ALGO_ECDSA_P384_SHA384 = 1

#: SIGNING_KEY values (KEY_INFO bits 4:2).
SIGNING_KEYS = {0: "VCEK", 1: "VLEK", 7: "NONE"}

PRODUCTS = ("Milan", "Genoa", "Turin")


def product_from_cpuid(family: int, model: int) -> str | None:
    """The EPYC product named by CPUID family/model (report version 3+), ``None`` if unknown.

    Family 19h models 00h-0Fh are Milan, 10h-1Fh and A0h-AFh (Bergamo/Siena) Genoa; family
    1Ah models 00h-11h are Turin.
    """
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return "Genoa"
    if family == 0x1A and model <= 0x11:
        return "Turin"
    return None


@dataclass(frozen=True)
class TcbVersion:
    """A 64-bit TCB_VERSION. Its byte layout depends on the product, so it is kept raw and
    decoded once the product is known (from CPUID or from the ARK the chain verifies to)."""

    raw: bytes  # 8 bytes as stored

    def components(self, product: str) -> dict[str, int]:
        b = self.raw
        if product == "Turin":
            # Turin: FMC, BOOT_LOADER, TEE, SNP, reserved[3], MICROCODE.
            return {"fmc": b[0], "bootloader": b[1], "tee": b[2], "snp": b[3], "microcode": b[7]}
        # Milan/Genoa: BOOT_LOADER, TEE, reserved[4], SNP, MICROCODE.
        return {"bootloader": b[0], "tee": b[1], "snp": b[6], "microcode": b[7]}

    def reserved(self, product: str) -> bytes:
        """The bytes the product's layout reserves (zero in every report the firmware signs;
        anything else is a layout this parser does not know for ``product``)."""
        return self.raw[4:7] if product == "Turin" else self.raw[2:6]


@dataclass(frozen=True)
class GuestPolicy:
    """Guest POLICY (ABI spec Table 9), a 64-bit little-endian bit field."""

    value: int

    def _bit(self, n: int) -> bool:
        return bool((self.value >> n) & 1)

    @property
    def abi_minor(self) -> int:  # bits 7:0
        return self.value & 0xFF

    @property
    def abi_major(self) -> int:  # bits 15:8
        return (self.value >> 8) & 0xFF

    @property
    def smt_allowed(self) -> bool:  # bit 16
        return self._bit(16)

    @property
    def migrate_ma_allowed(self) -> bool:  # bit 18
        return self._bit(18)

    @property
    def debug_allowed(self) -> bool:  # bit 19
        return self._bit(19)

    @property
    def single_socket(self) -> bool:  # bit 20
        return self._bit(20)

    def to_claims(self) -> dict[str, Any]:
        return {
            "abi_major": self.abi_major,
            "abi_minor": self.abi_minor,
            "smt_allowed": self.smt_allowed,
            "migrate_ma_allowed": self.migrate_ma_allowed,
            "debug_allowed": self.debug_allowed,
            "single_socket": self.single_socket,
            "cxl_allowed": self._bit(21),
            "mem_aes_256_xts": self._bit(22),
            "rapl_disabled": self._bit(23),
            "ciphertext_hiding": self._bit(24),
            "page_swap_disabled": self._bit(25),
        }


#: PLATFORM_INFO bits (ABI spec Table 23, offset 0x40; bit 6 is reserved, 7 is TIO_EN).
PLATFORM_INFO_BITS = {0: "smt_enabled", 1: "tsme_enabled", 2: "ecc_enabled", 3: "rapl_disabled",
                      4: "ciphertext_hiding_enabled", 5: "alias_check_complete",
                      7: "tio_enabled"}


def platform_info_claims(value: int) -> dict[str, Any]:
    """PLATFORM_INFO bit flags, plus the raw value: the field states the host's configuration
    and grows with firmware releases without a report version change, so a bit unknown here is
    passed on (``raw``) for policy to judge rather than refused."""
    out: dict[str, Any] = {name: bool((value >> i) & 1) for i, name in PLATFORM_INFO_BITS.items()}
    out["raw"] = f"0x{value:016x}"
    return out


#: Reserved byte ranges [start, end) of each report version, which the firmware writes as
#: zero (ABI spec Table 23; go-sev-guest checks the same, bar 0x1F8-0x207 before version 5).
#: A non-zero byte there is a field this parser does not know: refused, never skipped.
#: Version 4 has the version 3 layout (as the sev crate reads it); version 5 adds the
#: mitigation vectors at 0x1F8-0x207.
_RESERVED_COMMON = ((0x04C, 0x050), (0x1EB, 0x1EC), (0x1EF, 0x1F0), (0x330, REPORT_SIZE))
RESERVED_RANGES = {
    2: ((0x188, 0x1A0), (0x1F8, SIGNED_SIZE), *_RESERVED_COMMON),
    3: ((0x18B, 0x1A0), (0x1F8, SIGNED_SIZE), *_RESERVED_COMMON),
    4: ((0x18B, 0x1A0), (0x1F8, SIGNED_SIZE), *_RESERVED_COMMON),
    5: ((0x18B, 0x1A0), (0x208, SIGNED_SIZE), *_RESERVED_COMMON),
}
#: POLICY bit 17 is reserved and must be one; bits 63:26 are reserved and must be zero
#: (ABI spec Table 9). SNP_LAUNCH_START refuses any other policy, so a report showing one
#: comes from firmware that defines a bit this verifier cannot judge.
POLICY_MUST_BE_ONE = 1 << 17
POLICY_KNOWN_BITS = (1 << 26) - 1
#: A guest requests reports from VMPL 0-3 (ABI spec Table 23, VMPL).
MAX_GUEST_VMPL = 3
#: KEY_INFO bits 31:5 are reserved (ABI spec Table 23, offset 0x048).
KEY_INFO_KNOWN_BITS = 0x1F


def _check_reserved(data: bytes, version: int, policy: int, key_info: int) -> None:
    for start, end in RESERVED_RANGES[version]:
        if any(data[start:end]):
            raise MalformedEvidence(
                f"SNP report version {version} reserved bytes 0x{start:03X}-0x{end - 1:03X} "
                f"are not zero", tee="snp", field="reserved", actual=data[start:end].hex())
    if not policy & POLICY_MUST_BE_ONE:
        raise MalformedEvidence("SNP report POLICY bit 17 (reserved, must be one) is zero",
                                tee="snp", field="policy", actual=f"0x{policy:016x}")
    if policy & ~POLICY_KNOWN_BITS:
        raise MalformedEvidence(
            f"SNP report POLICY sets reserved bits 0x{policy & ~POLICY_KNOWN_BITS:x} (63:26)",
            tee="snp", field="policy", actual=f"0x{policy:016x}")
    if key_info & ~KEY_INFO_KNOWN_BITS:
        raise MalformedEvidence(f"SNP report KEY_INFO sets reserved bits (31:5): "
                                f"0x{key_info:08x}", tee="snp", field="key_info",
                                actual=key_info)


@dataclass(frozen=True)
class SnpReport:
    """One parsed ATTESTATION_REPORT. Offsets are those of ABI spec Table 23."""

    version: int  # 0x000
    guest_svn: int  # 0x004
    policy: GuestPolicy  # 0x008
    family_id: bytes  # 0x010, 16
    image_id: bytes  # 0x020, 16
    vmpl: int  # 0x030
    signature_algo: int  # 0x034
    current_tcb: TcbVersion  # 0x038
    platform_info: int  # 0x040
    key_info: int  # 0x048: AUTHOR_KEY_EN bit 0, MASK_CHIP_KEY bit 1, SIGNING_KEY bits 4:2
    report_data: bytes  # 0x050, 64
    measurement: bytes  # 0x090, 48
    host_data: bytes  # 0x0C0, 32
    id_key_digest: bytes  # 0x0E0, 48
    author_key_digest: bytes  # 0x110, 48
    report_id: bytes  # 0x140, 32
    report_id_ma: bytes  # 0x160, 32
    reported_tcb: TcbVersion  # 0x180
    cpuid_fam_id: int | None  # 0x188 (version 3+)
    cpuid_mod_id: int | None  # 0x189 (version 3+)
    cpuid_step: int | None  # 0x18A (version 3+)
    chip_id: bytes  # 0x1A0, 64
    committed_tcb: TcbVersion  # 0x1E0
    current_version: tuple[int, int, int]  # 0x1E8 build, 0x1E9 minor, 0x1EA major
    committed_version: tuple[int, int, int]  # 0x1EC build, 0x1ED minor, 0x1EE major
    launch_tcb: TcbVersion  # 0x1F0
    launch_mit_vector: int | None  # 0x1F8 (version 5+)
    current_mit_vector: int | None  # 0x200 (version 5+)
    signature_r: int  # 0x2A0, 72 bytes little-endian
    signature_s: int  # 0x2E8, 72 bytes little-endian
    signed_bytes: bytes  # 0x000-0x29F, exactly what the signature covers

    @property
    def signing_key(self) -> str:
        return SIGNING_KEYS.get((self.key_info >> 2) & 0x7, "RESERVED")

    @property
    def author_key_en(self) -> bool:
        return bool(self.key_info & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.key_info & 2)

    @property
    def chip_id_masked(self) -> bool:
        """MASK_CHIP_ID in effect: the firmware writes zeroes instead of the chip id."""
        return not any(self.chip_id)

    @property
    def cpuid_product(self) -> str | None:
        if self.cpuid_fam_id is None or self.cpuid_mod_id is None:
            return None
        return product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    @classmethod
    def from_bytes(cls, data: bytes) -> SnpReport:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("SNP report must be bytes")
        data = bytes(data)
        if len(data) != REPORT_SIZE:
            raise MalformedEvidence(
                f"SNP report must be exactly {REPORT_SIZE} bytes, got {len(data)}",
                tee="snp", field="length", expected=REPORT_SIZE, actual=len(data),
            )
        version, guest_svn, policy = struct.unpack_from("<IIQ", data, 0x000)
        if version not in SUPPORTED_VERSIONS:
            raise MalformedEvidence(
                f"SNP report VERSION {version} is not one of {list(SUPPORTED_VERSIONS)}",
                tee="snp", field="version", actual=version,
            )
        vmpl, sig_algo = struct.unpack_from("<II", data, 0x030)
        if vmpl > MAX_GUEST_VMPL:
            # Not a level a guest runs at: the request was not the guest's (the hypervisor's,
            # whose REPORT_DATA the host chooses), so the report binds nothing (ADR 0062).
            raise MalformedEvidence(
                f"SNP report VMPL 0x{vmpl:x} is not a guest VMPL (0-3): the guest did not "
                "request this report", tee="snp", field="vmpl", actual=vmpl)
        platform_info, key_info = struct.unpack_from("<QI", data, 0x040)
        # The 72-byte R and S fields hold 48-byte P-384 scalars; the high 24 bytes must be zero.
        r_raw, s_raw = data[0x2A0:0x2E8], data[0x2E8:0x330]
        if any(r_raw[48:]) or any(s_raw[48:]):
            raise MalformedEvidence("SNP report signature R/S exceed 48 bytes",
                                    tee="snp", field="signature")
        has_cpuid = version >= 3
        has_mit = version >= 5
        _check_reserved(data, version, policy, key_info)
        u8 = data.__getitem__

        def tcb(off: int) -> TcbVersion:
            return TcbVersion(data[off : off + 8])

        return cls(
            version=version,
            guest_svn=guest_svn,
            policy=GuestPolicy(policy),
            family_id=data[0x010:0x020],
            image_id=data[0x020:0x030],
            vmpl=vmpl,
            signature_algo=sig_algo,
            current_tcb=tcb(0x038),
            platform_info=platform_info,
            key_info=key_info,
            report_data=data[0x050:0x090],
            measurement=data[0x090:0x0C0],
            host_data=data[0x0C0:0x0E0],
            id_key_digest=data[0x0E0:0x110],
            author_key_digest=data[0x110:0x140],
            report_id=data[0x140:0x160],
            report_id_ma=data[0x160:0x180],
            reported_tcb=tcb(0x180),
            cpuid_fam_id=u8(0x188) if has_cpuid else None,
            cpuid_mod_id=u8(0x189) if has_cpuid else None,
            cpuid_step=u8(0x18A) if has_cpuid else None,
            chip_id=data[0x1A0:0x1E0],
            committed_tcb=tcb(0x1E0),
            current_version=(u8(0x1E8), u8(0x1E9), u8(0x1EA)),
            committed_version=(u8(0x1EC), u8(0x1ED), u8(0x1EE)),
            launch_tcb=tcb(0x1F0),
            launch_mit_vector=struct.unpack_from("<Q", data, 0x1F8)[0] if has_mit else None,
            current_mit_vector=struct.unpack_from("<Q", data, 0x200)[0] if has_mit else None,
            signature_r=int.from_bytes(r_raw, "little"),
            signature_s=int.from_bytes(s_raw, "little"),
            signed_bytes=data[:SIGNED_SIZE],
        )
