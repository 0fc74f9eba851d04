"""SNP verifier against the throw-away AMD PKI of ``tests/support/snp_factory``: each failure
path breaks exactly one thing and must fail for exactly that reason."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import struct
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from arca import errors as E
from arca.verifier.base import Expected
from arca.verifier.snp import SnpVerifier, certtable
from arca.verifier.snp import certs as snp_certs
from tests.support.snp_factory import (
    NOW,
    MemoryCollateral,
    SnpCase,
    _rsa_cert,
    _rsa_key,
    build_case,
    make_pki,
)

PRODUCTS_VERSIONS = [("Milan", 2), ("Milan", 3), ("Genoa", 2), ("Genoa", 5), ("Turin", 3),
                     ("Turin", 5)]


def verify(case: SnpCase, *, expected: Expected = Expected(), at: dt.datetime = NOW,
           pins: dict[str, str] | None = None) -> dict[str, Any]:
    v = SnpVerifier(case.collateral(), pinned_arks=pins or case.pins)
    return v.verify(case.report, expected=expected, at=at).to_dict()


@pytest.mark.parametrize("product,version", PRODUCTS_VERSIONS)
@pytest.mark.parametrize("kind", ["VCEK", "VLEK"])
def test_valid_reports_give_their_claims(product: str, version: int, kind: str) -> None:
    case = build_case(product, version, kind)
    c = verify(case)
    f = case.fields
    assert c["tee"] == "snp"
    assert c["product"] == product and c["signing_key"] == kind
    assert c["format_version"] == version
    assert c["measurement"] == f.measurement.hex()
    assert c["host_data"] == c["init_data"] == f.host_data.hex()
    assert c["report_data"] == f.report_data.hex()
    assert c["chip_id"] == f.chip_id.hex()
    assert c["reported_tcb"] == f.reported_tcb
    assert c["policy"] == "0x0000000000030000"
    assert c["policy_flags"]["smt_allowed"] is True
    assert c["debug"] is False and c["vmpl"] == 0 and c["guest_svn"] == 7
    assert ("cpuid" in c) == (version >= 3)
    assert ("launch_mit_vector" in c) == (version >= 5)
    if version >= 5:
        assert (c["launch_mit_vector"], c["current_mit_vector"]) == (5, 7)
    assert c["tcb_status"] is None


def _bad_ask(case: SnpCase) -> None:
    pki = make_pki(case.product)
    other = _rsa_key("intruder")
    nb, na = NOW - dt.timedelta(days=10), NOW + dt.timedelta(days=10)
    case.files["ask.pem"] = _rsa_cert(f"SEV-{case.product}", pki.ask_key,
                                      f"ARK-{case.product}", other, nb, na, 7)


def _bad_ark_self_signature(case: SnpCase) -> None:
    pki = make_pki(case.product)
    nb, na = NOW - dt.timedelta(days=10), NOW + dt.timedelta(days=10)
    case.files["ark.pem"] = _rsa_cert(f"ARK-{case.product}", pki.ark_key,
                                      f"ARK-{case.product}", _rsa_key("intruder"), nb, na, 7)


def _vcek_claims_to_be_vlek(case: SnpCase) -> None:
    pki = make_pki(case.product)
    case.files = {"vlek.pem": case.files["vcek.pem"], "asvk.pem": pki.asvk_pem,
                  "ark.pem": pki.ark_pem}


def _vlek_claims_to_be_vcek(case: SnpCase) -> None:
    pki = make_pki(case.product)
    case.files = {"vcek.pem": case.files["vlek.pem"], "ask.pem": pki.ask_pem,
                  "ark.pem": pki.ark_pem}


def _asvk_as_ask(case: SnpCase) -> None:
    case.files["ask.pem"] = make_pki(case.product).asvk_pem


def _genoa_ask(case: SnpCase) -> None:
    case.files["ask.pem"] = make_pki("Genoa").ask_pem


FAILURES: list[tuple[str, Callable[[], SnpCase], type[E.ArcaError], str, dict[str, Any]]] = [
    ("report signature",
     lambda: build_case(report_key=ec.generate_private_key(ec.SECP384R1())),
     E.SignatureInvalid, "signature", {}),
    ("signature algorithm", lambda: build_case(sig_algo=2), E.SignatureInvalid,
     "signature_algo", {}),
    ("VCEK not signed by ASK",
     lambda: build_case(leaf_opts={"signer": _rsa_key("intruder")}), E.ChainInvalid, "vcek", {}),
    ("VLEK not signed by ASVK",
     lambda: build_case(kind="VLEK", leaf_opts={"signer": make_pki().ask_key}), E.ChainInvalid,
     "vlek", {}),
    ("ASK not signed by ARK", lambda: _mutate(build_case(), _bad_ask), E.ChainInvalid, "ask", {}),
    ("ARK not self-signed", lambda: _mutate(build_case(), _bad_ark_self_signature),
     E.ChainInvalid, "ark", {}),
    ("untrusted ARK", lambda: build_case(), E.UntrustedRoot, "ark", {"pins": {"00" * 32: "Milan"}}),
    ("expired VCEK", lambda: build_case(leaf_opts={"expired": True}), E.Expired, "vcek", {}),
    ("expired ASK", lambda: build_case(pki=make_pki(ask_expired=True)), E.Expired, "ask", {}),
    ("expired ARK", lambda: build_case(pki=make_pki(ark_expired=True)), E.Expired, "ark", {}),
    ("not yet valid VCEK", lambda: build_case(), E.Expired, "vcek",
     {"at": NOW - dt.timedelta(days=60)}),
    ("hwID mismatch", lambda: build_case(leaf_opts={"chip_id": b"\x09" * 64}), E.ChainInvalid,
     "hwid", {}),
    ("TCB snp mismatch",
     lambda: build_case(leaf_opts={"tcb": {"bootloader": 3, "tee": 0, "snp": 9,
                                           "microcode": 115}}),
     E.TcbError, "reported_tcb.snp", {}),
    ("TCB microcode missing in VCEK",
     lambda: build_case(leaf_opts={"tcb": {"bootloader": 3, "tee": 0, "snp": 8}}),
     E.TcbError, "reported_tcb.microcode", {}),
    ("Turin fmc mismatch",
     lambda: build_case("Turin", 3, leaf_opts={"tcb": {"fmc": 2, "bootloader": 3, "tee": 0,
                                                       "snp": 8, "microcode": 115}}),
     E.TcbError, "reported_tcb.fmc", {}),
    ("signing key type mismatch",
     lambda: _mutate(build_case(signing_key=1), _vcek_claims_to_be_vlek), E.ChainInvalid,
     "signing_key", {}),
    ("VLEK presented for a VCEK report",
     lambda: _mutate(build_case(kind="VLEK", signing_key=0), _vlek_claims_to_be_vcek),
     E.ChainInvalid, "signing_key", {}),
    ("ASVK presented as the ASK",
     lambda: _mutate(build_case(), _asvk_as_ask), E.ChainInvalid, "ask", {}),
    ("ASK of another product",
     lambda: _mutate(build_case(), _genoa_ask), E.ChainInvalid, "ask", {}),
    ("product mismatch (v3 CPUID names Genoa)",
     lambda: build_case("Milan", 3, cpuid=(0x19, 0x11, 0x1)), E.ChainInvalid, "product", {}),
    ("unknown CPUID (v5)", lambda: build_case("Genoa", 5, cpuid=(0x17, 0x31, 0)),
     E.ChainInvalid, "product", {}),
    ("VCEK productName of another product",
     lambda: build_case(leaf_opts={"product_name": "Genoa-B0"}), E.ChainInvalid, "product", {}),
    ("wrong report data", lambda: build_case(), E.BindingMismatch, "report_data",
     {"expected": Expected(report_data=b"\xee" * 64)}),
    ("wrong host_data (init-data)", lambda: build_case(), E.BindingMismatch, "init_data",
     {"expected": Expected(init_data_hash=b"\xee" * 32)}),
    ("SIGNING_KEY none", lambda: build_case(signing_key=7), E.MalformedEvidence, "signing_key",
     {}),
]


def _mutate(case: SnpCase, fn: Callable[[SnpCase], None]) -> SnpCase:
    fn(case)
    return case


@pytest.mark.parametrize("name,make,err,field,kw", FAILURES, ids=[f[0] for f in FAILURES])
def test_each_defect_fails_for_exactly_its_reason(
    name: str, make: Callable[[], SnpCase], err: type[E.ArcaError], field: str,
    kw: dict[str, Any],
) -> None:
    case = make()
    with pytest.raises(E.EvidenceError) as info:
        verify(case, **kw)
    assert type(info.value) is err, f"{name}: {info.value!r}"
    assert info.value.fields["field"] == field, f"{name}: {info.value}"
    assert info.value.describe().startswith(f"{err.check}: ")


def test_debug_policy_is_flagged_not_rejected() -> None:
    c = verify(build_case(policy=0x30000 | (1 << 19)))
    assert c["debug"] is True and c["policy_flags"]["debug_allowed"] is True
    assert verify(build_case())["debug"] is False


def test_policy_flags_decoded() -> None:
    c = verify(build_case(policy=0x1F | (1 << 17) | (1 << 18) | (1 << 20) | (3 << 8)))
    flags = c["policy_flags"]
    assert flags["abi_minor"] == 0x1F and flags["abi_major"] == 3
    assert flags["migrate_ma_allowed"] and flags["single_socket"]
    assert not flags["smt_allowed"] and not flags["debug_allowed"]


def test_masked_chip_id_skips_hwid_and_raw_hwid_is_accepted() -> None:
    assert verify(build_case(chip_id=bytes(64), leaf_opts={"chip_id": b"\x05" * 64}))
    assert verify(build_case(leaf_opts={"raw_hwid": True}))["chip_id"] == bytes(range(100,
                                                                                      164)).hex()


def test_turin_hwid_is_eight_bytes_of_chip_id() -> None:
    case = build_case("Turin", 3, chip_id=bytes(range(100, 108)) + b"\x01" + bytes(55),
                      leaf_opts={"chip_id": bytes(range(100, 108)) + bytes(56)})
    with pytest.raises(E.ChainInvalid, match="hwid"):
        verify(case)


def test_short_expected_values_are_zero_padded_and_long_ones_refused() -> None:
    case = build_case(report_data=b"\xab" * 48 + bytes(16), host_data=b"\xcd" * 32)
    verify(case, expected=Expected(report_data=b"\xab" * 48, init_data_hash=b"\xcd" * 32))
    with pytest.raises(E.BindingMismatch):
        verify(case, expected=Expected(report_data=b"\xab" * 47))
    with pytest.raises(ValueError):
        verify(case, expected=Expected(init_data_hash=b"\xcd" * 48))


def test_missing_collateral_is_a_collateral_error() -> None:
    case = build_case()
    del case.files["ask.pem"]
    with pytest.raises(E.CollateralError, match="ask.pem"):
        verify(case)
    with pytest.raises(E.CollateralError):
        SnpVerifier(None, pinned_arks=case.pins).verify(case.report, at=NOW)


def test_vcek_has_serial_zero_like_kds_issues() -> None:
    case = build_case()
    leaf = snp_certs.load_amd_cert(case.files["vcek.pem"], "vcek")
    # The DER carries INTEGER 0 as serial (read without the X.509 library, which warns).
    assert snp_certs._serial_zero_patched(leaf.der) is not None


def test_serial_zero_patch_keeps_everything_but_the_serial() -> None:
    case = build_case()
    der = snp_certs.load_amd_cert(case.files["vcek.pem"], "vcek").der
    patched = snp_certs._serial_zero_patched(der)
    assert patched is not None and len(patched) == len(der)
    assert sum(a != b for a, b in zip(der, patched, strict=True)) == 1
    assert snp_certs._serial_zero_patched(patched) is None


def test_unchanged_chain_is_verified_once(monkeypatch: pytest.MonkeyPatch) -> None:
    case = build_case()
    v = SnpVerifier(case.collateral(), pinned_arks=case.pins)
    calls = []
    real = v._chains._verify_uncached
    monkeypatch.setattr(v._chains, "_verify_uncached",
                        lambda *a: calls.append(1) or real(*a))
    for _ in range(3):
        v.verify(case.report, at=NOW)
    assert len(calls) == 1
    # Dates are still checked on every call, cache or not.
    with pytest.raises(E.Expired):
        v.verify(case.report, at=NOW + dt.timedelta(days=20 * 365))
    # A different chain is verified again.
    other = build_case(leaf_opts={"expired": True})
    v._collateral = other.collateral()
    with pytest.raises(E.Expired):
        v.verify(other.report, at=NOW)
    assert len(calls) == 2


def test_failed_chain_is_not_cached() -> None:
    case = build_case()
    v = SnpVerifier(case.collateral(), pinned_arks={"00" * 32: "Milan"})
    for _ in range(2):
        with pytest.raises(E.UntrustedRoot):
            v.verify(case.report, at=NOW)


def test_constructor_rejects_unknown_products_and_empty_pins() -> None:
    with pytest.raises(ValueError):
        SnpVerifier(None, pinned_arks={"00": "Zen"})
    with pytest.raises(ValueError):
        SnpVerifier(None, pinned_arks={})


def test_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError):
        verify(build_case(), at=dt.datetime(2026, 1, 1))  # noqa: DTZ001


@pytest.mark.parametrize("value,hwid", [
    (bytes(range(64)), bytes(range(64))),
    (b"\x04\x40" + bytes(range(64)), bytes(range(64))),
    (bytes(range(8)), bytes(range(8))),
    (b"\x04\x08" + bytes(range(8)), bytes(range(8))),
    (b"\x04\x3e" + bytes(62), b"\x04\x3e" + bytes(62)),  # raw 64 bytes that look like DER
])
def test_hwid_raw_or_octet_string(value: bytes, hwid: bytes) -> None:
    assert snp_certs._hwid(value) == hwid


@pytest.mark.parametrize("value", [b"", b"\x04\x02ab", bytes(63), b"\x04\x07" + bytes(7)])
def test_hwid_of_other_sizes_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError):
        snp_certs._hwid(value)


def test_malformed_leaf_extension_is_malformed_evidence() -> None:
    # The factory writes the productName length in one byte: 200 makes invalid DER, signed.
    case = build_case(leaf_opts={"product_name": "x" * 200})
    with pytest.raises(E.MalformedEvidence) as info:
        verify(case)
    assert info.value.fields["field"] == "extensions"


GOLDEN = pathlib.Path(__file__).parent / "golden"


@pytest.mark.parametrize("product,version,kind", [("Genoa", 5, "VCEK"), ("Turin", 3, "VLEK")])
def test_claims_match_golden_json(product: str, version: int, kind: str) -> None:
    golden = GOLDEN / f"snp_{product.lower()}_v{version}_{kind.lower()}_claims.json"
    claims = verify(build_case(product, version, kind))
    assert json.loads(json.dumps(claims)) == json.loads(golden.read_text())


def _der(pem: bytes) -> bytes:
    return snp_certs.load_amd_cert(pem, "x").der


@pytest.mark.parametrize("kind", ["VCEK", "VLEK"])
def test_extended_evidence_carries_its_certificates(kind: str) -> None:
    case = build_case("Genoa", 3, kind)
    leaf = "vcek.pem" if kind == "VCEK" else "vlek.pem"
    ca = "ask.pem" if kind == "VCEK" else "asvk.pem"
    # The GHCB table has one CA slot (the ASK GUID), also used for the ASVK.
    table = {leaf: _der(case.files[leaf]), "ask.pem": _der(case.files[ca]),
             "ark.pem": _der(case.files["ark.pem"])}
    evidence = certtable.join_evidence(case.report, table)
    v = SnpVerifier(None, pinned_arks=case.pins)
    assert v.verify(evidence, at=NOW).values["signing_key"] == kind
    # Only the leaf in the table, the CA chain from collateral.
    partial = certtable.join_evidence(case.report, {leaf: table[leaf]})
    SnpVerifier(MemoryCollateral({ca: case.files[ca], "ark.pem": case.files["ark.pem"]}),
                pinned_arks=case.pins).verify(partial, at=NOW)


def test_extended_evidence_with_a_foreign_leaf_fails_the_signature() -> None:
    case, other = build_case("Milan", 2), build_case("Genoa", 2)
    evidence = certtable.join_evidence(case.report, {
        "vcek.pem": _der(other.files["vcek.pem"]), "ask.pem": _der(other.files["ask.pem"]),
        "ark.pem": _der(other.files["ark.pem"])})
    with pytest.raises(E.SignatureInvalid):
        SnpVerifier(None, pinned_arks={**case.pins, **other.pins}).verify(evidence, at=NOW)


@pytest.mark.parametrize("table,reason", [
    (b"\x09" * 16 + struct.pack("<II", 24, 6) + b"abcdef", "terminating"),
    (bytes(10), "terminating"),
    (next(iter(certtable.CERT_GUIDS)) + struct.pack("<II", 48, 5000) + bytes(24),
     "outside"),
    (b"".join(g + struct.pack("<II", 72, 1) for g in [next(iter(certtable.CERT_GUIDS))] * 2)
     + bytes(24) + b"x", "twice"),
    (b"".join(bytes([i]) * 16 + struct.pack("<II", 500, 1) for i in range(1, 18)) + bytes(500),
     "entries"),
    (bytes(70 * 1024), "exceeds"),
])
def test_malformed_certificate_tables(table: bytes, reason: str) -> None:
    with pytest.raises(E.MalformedEvidence, match=reason):
        certtable.split_evidence(build_case().report + table)


def test_table_ignores_unknown_guids() -> None:
    report = build_case().report
    crl_guid = bytes.fromhex("92f81bc358114d3d97ffd19f88dc67ea")
    ev = report + crl_guid + struct.pack("<II", 48, 3) + bytes(24) + b"crl"
    assert certtable.split_evidence(ev) == (report, {})
