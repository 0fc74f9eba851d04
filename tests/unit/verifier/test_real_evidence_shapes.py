"""Shapes real platforms give evidence in, beyond the byte-exact dev vectors (ADR 0062).

Each case starts from a real ``dev/`` vector (vendor-signed, verified against the real roots)
and changes only what a real platform changes without touching a signed byte — e.g. the zero
padding of a quote handed out in a fixed-size buffer — or, where a signed byte must change
(SNP reserved fields), re-signs with the throw-away AMD PKI of ``tests/support/snp_factory``
(labelled ``test PKI``). Whatever the shape, a byte the verifier cannot account for is a clear
refusal, never a silent accept.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from arca.errors import ChainInvalid, MalformedEvidence
from arca.verifier.base import Expected
from arca.verifier.collateral import DirectoryCollateral
from arca.verifier.dcap import SgxVerifier, TdxVerifier, parse_quote
from arca.verifier.snp import SnpVerifier, certtable
from arca.verifier.snp.certs import load_amd_cert
from arca.verifier.snp.certtable import ENTRY_SIZE
from arca.verifier.snp.report import REPORT_SIZE, SIGNED_SIZE
from tests.support.snp_factory import (
    NOW,
    MemoryCollateral,
    SnpCase,
    _leaf_key,
    build_case,
    make_pki,
)

VECTORS = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
DEV = VECTORS / "dev"
QUOTE_CASES = ["sgx-dcapqvl-1", "tdx-dcapqvl-1", "tdx-gotdxguest-2"] if DEV.is_dir() else []
needs_vectors = pytest.mark.skipif(not DEV.is_dir(), reason="../shared/vectors absent")


def _quote_case(name: str) -> tuple[bytes, SgxVerifier | TdxVerifier, dt.datetime, dict]:
    folder = DEV / name
    exp = json.loads((folder / "expected.json").read_text())
    at = dt.datetime.fromisoformat(exp["verify_at"].replace("Z", "+00:00"))
    cls = SgxVerifier if name.startswith("sgx") else TdxVerifier
    return (folder / "quote.bin").read_bytes(), cls(DirectoryCollateral(folder)), at, exp


# -- DCAP: a quote in a fixed-size buffer ----------------------------------------------------


@needs_vectors
@pytest.mark.parametrize("case", QUOTE_CASES)
@pytest.mark.parametrize("pad", [1, 70, 8000 - 4936])
def test_real_quote_followed_by_zero_padding_verifies(case: str, pad: int) -> None:
    # The TDX guest driver and QGS hand quotes out in fixed buffers (Trustee's td-quote.bin and
    # dcap-qvl's sample carry 70 zero bytes, a COS guest's 3065): same claims, same status.
    quote, verifier, at, exp = _quote_case(case)
    plain = verifier.verify(quote, at=at)
    padded = verifier.verify(quote + bytes(pad), at=at)
    assert padded.to_dict() == plain.to_dict()
    assert padded.values["report_data"] == exp["report_data"]


@needs_vectors
@pytest.mark.parametrize("case", QUOTE_CASES)
@pytest.mark.parametrize("tail", [b"\x01", bytes(69) + b"\x01", b"extra bytes"])
def test_anything_but_zeros_after_a_quote_is_refused(case: str, tail: bytes) -> None:
    quote, verifier, at, _ = _quote_case(case)
    with pytest.raises(MalformedEvidence, match="only zero padding may follow a quote"):
        verifier.verify(quote + tail, at=at)


# -- SNP: reserved fields, per report version (test PKI, re-signed) ---------------------------


def _resigned(case: SnpCase, pos: int, value: int) -> SnpCase:
    """``case`` with report byte ``pos`` set to ``value`` and signed again by its leaf key, so
    the only thing wrong is that byte (test PKI: a real report cannot be re-signed)."""
    buf = bytearray(case.report)
    buf[pos] = value
    key = _leaf_key(f"{case.product}-{'VCEK' if case.fields.signing_key == 0 else 'VLEK'}")
    if pos < SIGNED_SIZE:
        r, s = decode_dss_signature(key.sign(bytes(buf[:SIGNED_SIZE]),
                                             ec.ECDSA(hashes.SHA384())))
        buf[0x2A0:0x2E8] = r.to_bytes(72, "little")
        buf[0x2E8:0x330] = s.to_bytes(72, "little")
    return SnpCase(bytes(buf), case.files, case.pins, case.fields, case.product)


def _snp_verify(case: SnpCase) -> dict[str, Any]:
    return SnpVerifier(case.collateral(), pinned_arks=case.pins).verify(
        case.report, at=NOW).to_dict()


#: (product, version, a reserved offset of that version). 0x1F8-0x207 is reserved before
#: version 5 and the mitigation vectors from it; 0x188-0x18A is reserved in version 2 only.
RESERVED = [("Milan", 2, 0x04C), ("Milan", 2, 0x188), ("Milan", 2, 0x19F), ("Milan", 2, 0x1EB),
            ("Genoa", 3, 0x18B), ("Genoa", 3, 0x1EF), ("Genoa", 3, 0x1F8), ("Genoa", 3, 0x29F),
            ("Genoa", 4, 0x18B), ("Genoa", 4, 0x1F8), ("Genoa", 4, 0x207),
            ("Turin", 5, 0x208), ("Turin", 5, 0x29F), ("Turin", 5, 0x330),
            ("Turin", 5, REPORT_SIZE - 1)]


@pytest.mark.parametrize("product,version,pos", RESERVED)
def test_snp_reserved_byte_set_is_refused(product: str, version: int, pos: int) -> None:
    case = build_case(product, version)
    _snp_verify(case)  # the unchanged report verifies
    with pytest.raises(MalformedEvidence, match="reserved bytes") as info:
        _snp_verify(_resigned(case, pos, 0x01))
    assert info.value.fields["field"] == "reserved"


@pytest.mark.parametrize("pos,value,name", [(0x1F8, 0x09, "launch_mit_vector"),
                                            (0x200, 0x03, "current_mit_vector")])
def test_snp_v5_mitigation_vectors_are_fields_not_reserved(pos: int, value: int,
                                                           name: str) -> None:
    claims = _snp_verify(_resigned(build_case("Turin", 5), pos, value))
    assert claims[name] == value


@pytest.mark.parametrize("policy,why", [(0x0000, "bit 17"), (0x10000, "bit 17"),
                                        (0x30000 | 1 << 26, "reserved bits"),
                                        (0x30000 | 1 << 63, "reserved bits")])
def test_snp_policy_outside_the_abi_is_refused(policy: int, why: str) -> None:
    with pytest.raises(MalformedEvidence, match=why) as info:
        _snp_verify(build_case("Genoa", 3, policy=policy))
    assert info.value.fields["field"] == "policy"


def test_snp_newest_policy_bits_are_decoded() -> None:
    # Bits 21-25 (CXL, AES-256-XTS, RAPL, ciphertext hiding, page swap) are Genoa/Turin-era.
    claims = _snp_verify(build_case("Turin", 5, policy=0x30000 | 0x1F << 21))
    flags = claims["policy_flags"]
    assert all(flags[k] for k in ("cxl_allowed", "mem_aes_256_xts", "rapl_disabled",
                                  "ciphertext_hiding", "page_swap_disabled"))


def test_snp_key_info_reserved_bits_are_refused() -> None:
    case = build_case("Milan", 3)
    with pytest.raises(MalformedEvidence, match="KEY_INFO"):
        _snp_verify(_resigned(case, 0x048, 0x20))  # bit 5, above SIGNING_KEY


def test_snp_platform_info_is_decoded_with_its_raw_value() -> None:
    # PLATFORM_INFO grows with firmware without a report version change: a bit unknown here
    # is passed on raw for policy, not refused (ADR 0062).
    case = _resigned(build_case("Turin", 5), 0x040, 0xA5)  # bits 0, 2, 5, 7
    info = _snp_verify(case)["platform_info"]
    assert info["smt_enabled"] and info["ecc_enabled"] and info["alias_check_complete"]
    assert info["tio_enabled"] and not info["tsme_enabled"]
    assert info["raw"] == "0x00000000000000a5"
    high = _snp_verify(_resigned(build_case("Turin", 5), 0x041, 0x01))["platform_info"]
    assert high["raw"] == "0x0000000000000101"  # the factory sets SMT_EN


# -- SNP: the host's certificate table as hosts lay it out ------------------------------------

_GUID = {name: guid for guid, name in certtable.CERT_GUIDS.items()}
_CRL_GUID = bytes.fromhex("92f81bc358114d3d97ffd19f88dc67ea")  # sev crate CertType::CRL
_EXTRA_GUID = bytes.fromhex("ecae0c0f950243b1afa20ae2e0d565b6")  # go-sev-guest extra info


def _table(entries: list[tuple[bytes, bytes]], *, pad: int = 0,
           offset_fix: int = 0) -> bytes:
    """A GHCB certificate table: entries, terminator, data in entry order, ``pad`` zeros."""
    start = ENTRY_SIZE * (len(entries) + 1) + offset_fix
    head, data = b"", b""
    for guid, blob in entries:
        head += guid + struct.pack("<II", start + len(data) if blob else 0, len(blob))
        data += blob
    return head + bytes(ENTRY_SIZE) + data + bytes(pad)


def _der(pem: bytes) -> bytes:
    return load_amd_cert(pem, "x").der


@pytest.mark.parametrize("kind", ["VCEK", "VLEK"])
def test_snp_table_in_host_order_with_extras_verifies(kind: str) -> None:
    case = build_case("Genoa", 3, kind)
    leaf = case.files["vcek.pem" if kind == "VCEK" else "vlek.pem"]
    ca = case.files["ask.pem" if kind == "VCEK" else "asvk.pem"]
    # ARK first, the CA under the ASK GUID (the table has no ASVK GUID), a CRL and an extra
    # platform-info blob, an empty entry for the other leaf kind, then page padding.
    other = "vlek.pem" if kind == "VCEK" else "vcek.pem"
    table = _table([(_GUID["ark.pem"], _der(case.files["ark.pem"])),
                    (_CRL_GUID, b"crl bytes"), (_GUID["ask.pem"], _der(ca)),
                    (_GUID[other], b""), (_EXTRA_GUID, b"\x08\x00\x00\x00\x11\x0f\xa1\x00"),
                    (_GUID[kind.lower() + ".pem"], _der(leaf))], pad=4096)
    got = SnpVerifier(None, pinned_arks=case.pins).verify(case.report + table, at=NOW)
    assert got.values["signing_key"] == kind and got.values["product"] == "Genoa"


def test_snp_table_entry_pointing_into_the_header_is_refused() -> None:
    case = build_case("Milan", 2)
    table = _table([(_GUID["vcek.pem"], _der(case.files["vcek.pem"]))], offset_fix=-8)
    with pytest.raises(MalformedEvidence, match="outside the table's data"):
        certtable.split_evidence(case.report + table)


# -- DCAP: certification data types ----------------------------------------------------------


def _with_u16(quote: bytes, pos: int, value: int) -> bytes:
    return quote[:pos] + struct.pack("<H", value) + quote[pos + 2:]


@needs_vectors
@pytest.mark.parametrize("cert_type", [1, 2, 3, 4, 6, 7, 8])
def test_sgx_v3_certification_data_other_than_a_pck_chain_is_refused(cert_type: int) -> None:
    # Types 1-3 carry an (encrypted) PPID for a PCK lookup, 4 a lone leaf, 7 a platform
    # manifest: none names a chain to a pinned root in the quote itself. The type field is
    # outside the signed bytes, so this is the real quote as a platform configured so sends it.
    quote, verifier, at, _ = _quote_case("sgx-dcapqvl-1")
    pos = quote.index(parse_quote(quote).signature.cert_data) - 6
    assert struct.unpack_from("<H", quote, pos)[0] == 5
    with pytest.raises(MalformedEvidence, match="certification_data.type"):
        verifier.verify(_with_u16(quote, pos, cert_type), at=at)


@needs_vectors
@pytest.mark.parametrize("case", ["tdx-dcapqvl-1", "tdx-gotdxguest-2"])
def test_tdx_certification_data_must_nest_a_pck_chain_in_a_qe_report(case: str) -> None:
    quote, verifier, at, _ = _quote_case(case)
    q = parse_quote(quote)
    inner = quote.index(q.signature.cert_data) - 6
    outer = len(q.signed_region) + 4 + 128  # signature data: signature, attestation key
    assert struct.unpack_from("<H", quote, outer)[0] == 6
    assert struct.unpack_from("<H", quote, inner)[0] == 5
    with pytest.raises(MalformedEvidence, match="expected 6 \\(QE report\\)"):
        verifier.verify(_with_u16(quote, outer, 5), at=at)
    for other in (1, 3, 6, 7):
        with pytest.raises(MalformedEvidence, match="certification_data.type"):
            verifier.verify(_with_u16(quote, inner, other), at=at)


def _replace_cert_data(quote: bytes, new: bytes) -> bytes:
    """``quote`` with its PCK chain PEM replaced by ``new`` and every enclosing (unsigned)
    length field adjusted: certification data, QE certification data (v4/v5), signature data."""
    q = parse_quote(quote)
    start = quote.index(q.signature.cert_data)
    end = start + len(q.signature.cert_data)
    delta = len(new) - (end - start)
    out = bytearray(quote[:start] + new + quote[end:])
    sizes = [len(q.signed_region), start - 4]  # signature data size, certification data size
    if q.version >= 4:
        sizes.append(len(q.signed_region) + 4 + 128 + 2)  # outer (type 6) size
    for pos in sizes:
        struct.pack_into("<I", out, pos, struct.unpack_from("<I", out, pos)[0] + delta)
    return bytes(out)


@needs_vectors
@pytest.mark.parametrize("case", QUOTE_CASES)
def test_chain_ending_in_the_2033_root_certificate_verifies(case: str) -> None:
    # Intel re-issued its SGX Root CA certificate (valid to 2049) with the same key; chains in
    # the field still embed the 2033 one. The pin is the key, so both verify the same.
    quote, verifier, at, _ = _quote_case(case)
    pem = parse_quote(quote).signature.cert_data
    current = (VECTORS / "roots" / "intel-sgx-root-ca.pem").read_bytes().strip()
    old = (VECTORS / "roots" / "intel-sgx-root-ca-2033.pem").read_bytes().strip()
    assert current in pem
    swapped = _replace_cert_data(quote, pem.replace(current, old))
    assert parse_quote(swapped).signature.cert_data.count(old) == 1
    assert verifier.verify(swapped, at=at).to_dict() == verifier.verify(quote, at=at).to_dict()


# -- SNP: where a VLEK's CA comes from ---------------------------------------------------------


def test_vlek_ca_filed_as_ask_pem_is_found_and_still_must_be_an_asvk() -> None:
    case = build_case("Milan", 3, "VLEK")
    case.files["ask.pem"] = case.files.pop("asvk.pem")
    assert _snp_verify(case)["signing_key"] == "VLEK"
    case.files["ask.pem"] = make_pki("Milan").ask_pem  # a VCEK's ASK is not a VLEK's CA
    with pytest.raises(ChainInvalid, match="asvk: CN 'SEV-Milan' is not SEV-VLEK-Milan"):
        _snp_verify(case)


# -- SNP: the real dev reports ----------------------------------------------------------------

SNP_CASES = sorted(p.name for p in DEV.glob("snp-*")) if DEV.is_dir() else []


def _snp_dev(name: str) -> tuple[bytes, SnpVerifier, dt.datetime]:
    folder = DEV / name
    exp = json.loads((folder / "expected.json").read_text())
    files = {p.name: p.read_bytes() for p in folder.glob("*.pem")}
    at = dt.datetime.fromisoformat(exp["verify_at"].replace("Z", "+00:00"))
    return (folder / "report.bin").read_bytes(), SnpVerifier(MemoryCollateral(files)), at


@needs_vectors
@pytest.mark.parametrize("case", SNP_CASES)
def test_real_snp_report_with_an_empty_certificate_table_verifies(case: str) -> None:
    # SNP_GET_EXT_REPORT on a host with no certificates configured: the pages are all zero,
    # i.e. a table that is only its terminator.
    report, verifier, at = _snp_dev(case)
    assert verifier.verify(report + bytes(4096), at=at).to_dict() == \
        verifier.verify(report, at=at).to_dict()


@needs_vectors
@pytest.mark.parametrize("case", SNP_CASES)
@pytest.mark.parametrize("pos", [0x04C, 0x188, 0x1EB, 0x1EF, 0x1F8, 0x29F, 0x400])
def test_real_snp_report_reserved_bytes_are_zero_and_checked(case: str, pos: int) -> None:
    # The vendor-signed reports verify, so their reserved bytes are zero; setting one is named
    # as what it is, before (and whatever) the signature says.
    report, verifier, at = _snp_dev(case)
    assert report[pos] == 0
    mutated = report[:pos] + b"\x01" + report[pos + 1:]
    with pytest.raises(MalformedEvidence, match="reserved bytes") as info:
        verifier.verify(mutated, at=at)
    assert info.value.fields["field"] == "reserved"


@pytest.mark.parametrize("vmpl", [0, 1, 3])
def test_snp_reports_from_each_guest_vmpl_verify(vmpl: int) -> None:
    assert _snp_verify(build_case("Genoa", 5, vmpl=vmpl))["vmpl"] == vmpl


@pytest.mark.parametrize("vmpl", [4, 0xFFFFFFFF])
def test_snp_report_not_requested_by_a_guest_vmpl_is_refused(vmpl: int) -> None:
    # Attack: the hypervisor asks the firmware for a report on the guest's behalf, putting the
    # broker's nonce and its own key digest in REPORT_DATA. Genuinely signed, but no guest
    # bound anything in it: refused before any binding is compared.
    case = build_case("Genoa", 5, vmpl=vmpl)
    with pytest.raises(MalformedEvidence, match="not a guest VMPL") as info:
        SnpVerifier(case.collateral(), pinned_arks=case.pins).verify(
            case.report, at=NOW, expected=Expected(report_data=case.fields.report_data))
    assert info.value.fields["field"] == "vmpl"


@pytest.mark.parametrize("product,version,pos", [
    ("Milan", 2, 0x038 + 2), ("Genoa", 3, 0x180 + 5), ("Genoa", 5, 0x1E0 + 3),
    ("Turin", 3, 0x1F0 + 4), ("Turin", 5, 0x180 + 6)])
def test_snp_tcb_version_reserved_bytes_of_the_products_layout_are_refused(
        product: str, version: int, pos: int) -> None:
    # A Milan/Genoa TCB_VERSION reserves bytes 2-5, Turin's (FMC first) bytes 4-6: a value
    # there is a layout this verifier would misread. Real reports have zeros (dev vectors).
    with pytest.raises(MalformedEvidence, match="TCB_VERSION layout reserves"):
        _snp_verify(_resigned(build_case(product, version), pos, 0x01))


@needs_vectors
@pytest.mark.parametrize("case", SNP_CASES)
def test_real_snp_report_carrying_its_real_certificates_in_a_table_verifies(case: str) -> None:
    # The extended report a guest gets when the host configured AMD's certificates: ARK, ASK,
    # VCEK in the host's order, a CRL entry, page padding; no collateral source at all.
    report, verifier, at = _snp_dev(case)
    folder = DEV / case
    table = _table([(_GUID["ark.pem"], _der((folder / "ark.pem").read_bytes())),
                    (_GUID["ask.pem"], _der((folder / "ask.pem").read_bytes())),
                    (_CRL_GUID, b"\x30\x00"),
                    (_GUID["vcek.pem"], _der((folder / "vcek.pem").read_bytes()))], pad=2048)
    alone = SnpVerifier(None).verify(report + table, at=at).to_dict()
    assert alone == verifier.verify(report, at=at).to_dict()
