"""The SEV-SNP report parser: layout, versions, policy/TCB decoding, strict bounds."""

from __future__ import annotations

import struct

import pytest

from arca.errors import MalformedEvidence
from arca.verifier.snp.report import (
    REPORT_SIZE,
    GuestPolicy,
    SnpReport,
    TcbVersion,
    platform_info_claims,
    product_from_cpuid,
)
from tests.support.snp_factory import ReportFields, _leaf_key, make_report


def report(version: int = 3, product: str = "Genoa", **kw: object) -> bytes:
    return make_report(product, ReportFields(version=version, **kw), _leaf_key("parser"))


@pytest.mark.parametrize("size", [0, 1, REPORT_SIZE - 1, REPORT_SIZE + 1, 4096])
def test_wrong_size_is_malformed(size: int) -> None:
    with pytest.raises(MalformedEvidence, match="exactly 1184"):
        SnpReport.from_bytes(bytes(size))


@pytest.mark.parametrize("version", [0, 1, 6, 0xFFFFFFFF])
def test_unknown_versions_are_refused(version: int) -> None:
    data = bytearray(report())
    struct.pack_into("<I", data, 0, version)
    with pytest.raises(MalformedEvidence, match="VERSION"):
        SnpReport.from_bytes(bytes(data))


def test_fields_at_their_offsets() -> None:
    r = SnpReport.from_bytes(report(5, "Genoa", guest_svn=9, vmpl=2, policy=0x3001F,
                                    signing_key=1))
    assert r.version == 5 and r.guest_svn == 9 and r.vmpl == 2
    assert r.policy.value == 0x3001F and r.signing_key == "VLEK"
    assert r.measurement == b"\x11" * 48 and r.host_data == b"\x22" * 32
    assert r.report_data == bytes(range(64)) and r.chip_id == bytes(range(100, 164))
    assert (r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step) == (0x19, 0x11, 0x01)
    assert r.cpuid_product == "Genoa"
    assert (r.launch_mit_vector, r.current_mit_vector) == (5, 7)
    assert r.current_version == (3, 55, 1)
    assert len(r.signed_bytes) == 0x2A0
    assert r.platform_info == 1 and platform_info_claims(r.platform_info)["smt_enabled"]


def test_version_2_has_no_cpuid_and_version_3_no_mitigation_vectors() -> None:
    r2 = SnpReport.from_bytes(report(2))
    assert r2.cpuid_fam_id is None and r2.cpuid_product is None
    r3 = SnpReport.from_bytes(report(3))
    assert r3.cpuid_fam_id == 0x19 and r3.launch_mit_vector is None


def test_signature_scalars_beyond_48_bytes_are_malformed() -> None:
    data = bytearray(report())
    data[0x2A0 + 60] = 1
    with pytest.raises(MalformedEvidence, match="R/S"):
        SnpReport.from_bytes(bytes(data))


def test_tcb_layouts_differ_for_turin() -> None:
    raw = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert TcbVersion(raw).components("Milan") == {"bootloader": 1, "tee": 2, "snp": 7,
                                                   "microcode": 8}
    assert TcbVersion(raw).components("Genoa") == TcbVersion(raw).components("Milan")
    assert TcbVersion(raw).components("Turin") == {"fmc": 1, "bootloader": 2, "tee": 3,
                                                   "snp": 4, "microcode": 8}


def test_policy_bits() -> None:
    p = GuestPolicy(0x00000000000B0000)  # the go-sev-guest sample: SMT, reserved, DEBUG
    assert p.smt_allowed and p.debug_allowed and not p.migrate_ma_allowed
    assert not p.single_socket and p.abi_major == 0 and p.abi_minor == 0
    flags = GuestPolicy((1 << 21) | (1 << 22) | (1 << 23) | (1 << 24) | (1 << 25)).to_claims()
    assert all(flags[k] for k in ("cxl_allowed", "mem_aes_256_xts", "rapl_disabled",
                                  "ciphertext_hiding", "page_swap_disabled"))


@pytest.mark.parametrize("family,model,product", [
    (0x19, 0x01, "Milan"), (0x19, 0x0F, "Milan"), (0x19, 0x10, "Genoa"), (0x19, 0x11, "Genoa"),
    (0x19, 0xA0, "Genoa"), (0x19, 0xAF, "Genoa"), (0x1A, 0x00, "Turin"), (0x1A, 0x11, "Turin"),
    (0x19, 0x20, None), (0x1A, 0x12, None), (0x17, 0x31, None), (0, 0, None),
])
def test_product_from_cpuid(family: int, model: int, product: str | None) -> None:
    assert product_from_cpuid(family, model) == product


def test_non_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        SnpReport.from_bytes("x" * REPORT_SIZE)  # type: ignore[arg-type]
