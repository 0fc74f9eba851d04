"""SEV-SNP revocation (the ARK's CRL) and the minimum-TCB rule (issue 13, item 8), table-driven
on the factory PKI: every defect of the CRL is refused, and the TCB claim follows the rule."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from arca.errors import CollateralError, Expired, Revoked, SignatureInvalid, TcbError
from arca.verifier.collateral import MemoryCollateral
from arca.verifier.snp.tcbpolicy import MinimumTcb
from arca.verifier.snp.verifier import SnpVerifier
from tests.support.snp_factory import NOW, PSS, _name, build_case, make_pki

MIN = {"Milan": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}}


def crl(*, revoked: tuple[int, ...] = (), issuer: str = "ARK-Milan", key: Any = None,
        this: dt.datetime = NOW - dt.timedelta(days=1),
        nxt: dt.datetime = NOW + dt.timedelta(days=30)) -> bytes:
    pki = make_pki("Milan")
    b = (x509.CertificateRevocationListBuilder().issuer_name(_name(issuer))
         .last_update(this).next_update(nxt))
    for s in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(this).build())
    signer = pki.ask_key if key == "ask" else pki.ark_key
    return b.sign(signer, hashes.SHA384(), rsa_padding=PSS).public_bytes(
        serialization.Encoding.DER)


def verify(files_extra: dict[str, bytes], *, min_tcb: Any = MIN, require: bool = True,
           **case_kw: Any) -> Any:
    case = build_case("Milan", 3, **case_kw)
    src = MemoryCollateral({**case.files, **files_extra})
    v = SnpVerifier(src, pinned_arks=case.pins, min_tcb=MinimumTcb.parse(min_tcb),
                    require_revocation=require)
    return v.verify(case.report, at=NOW)


def test_current_crl_and_tcb_at_the_minimum_is_up_to_date() -> None:
    assert verify({"vcek_crl.der": crl()}).tcb_status == "UpToDate"


def test_tcb_below_the_minimum_is_out_of_date_not_an_error() -> None:
    low = {"bootloader": 3, "tee": 0, "snp": 7, "microcode": 115}
    assert verify({"vcek_crl.der": crl()}, reported_tcb=low).tcb_status == "OutOfDate"


def test_product_without_a_minimum_is_tcb_not_supported() -> None:
    genoa = {"Genoa": {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0}}
    with pytest.raises(TcbError, match="TcbNotSupported"):
        verify({"vcek_crl.der": crl()}, min_tcb=genoa)


@pytest.mark.parametrize("extra,error,match", [
    ({}, CollateralError, "vcek_crl.der"),  # required and missing
    ({"vcek_crl.der": crl(revoked=(0x10001,))}, Revoked, "ask"),
    ({"vcek_crl.der": crl(issuer="ARK-Genoa")}, CollateralError, "issued by"),
    ({"vcek_crl.der": crl(key="ask")}, SignatureInvalid, "does not verify"),
    ({"vcek_crl.der": crl(nxt=NOW - dt.timedelta(hours=1),
                          this=NOW - dt.timedelta(days=2))}, Expired, "CRL valid"),
    ({"vcek_crl.der": b"not a crl"}, CollateralError, "not a DER CRL"),
])
def test_crl_defects_are_refused(extra: dict[str, bytes], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        verify(extra)


def test_without_require_a_missing_crl_is_not_an_error_and_no_rule_means_no_status() -> None:
    assert verify({}, min_tcb=None, require=False).tcb_status is None


@pytest.mark.parametrize("value,match", [
    (["Milan:bootloader=3,tee=0,snp=8"], "needs exactly"),
    (["Rome:bootloader=3,tee=0,snp=8,microcode=1"], "unknown product"),
    (["Milan bootloader=3"], "PRODUCT:"),
    (["Milan:bootloader=x"], "component=N"),
    ({"Milan": {"bootloader": 300, "tee": 0, "snp": 8, "microcode": 1}}, "0..255"),
    ({"Turin": {"bootloader": 1, "tee": 0, "snp": 8, "microcode": 1}}, "fmc"),
])
def test_minimum_tcb_refuses_incomplete_or_odd_rules(value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MinimumTcb.parse(value)


def test_minimum_tcb_forms_agree() -> None:
    a = MinimumTcb.parse(["Milan:bootloader=3,tee=0,snp=8,microcode=115"])
    b = MinimumTcb.parse(MIN)
    assert a == b and a is not None and a.to_json() == MIN
