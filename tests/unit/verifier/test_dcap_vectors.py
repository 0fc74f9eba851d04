"""Every SGX/TDX case of ../shared/vectors/dev gives exactly its expected.json at verify_at."""

from __future__ import annotations

import datetime as dt
import json
import pathlib

import pytest

from arca.errors import ArcaError, BindingMismatch, EvidenceError, Expired, TcbError
from arca.verifier.base import Expected
from arca.verifier.collateral import DirectoryCollateral
from arca.verifier.dcap import INTEL_SGX_ROOT_CA_SPKI_SHA256, SgxVerifier, TdxVerifier
from arca.verifier.dcap.pck import spki_sha256

VECTORS = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
DEV = VECTORS / "dev"
CASES = sorted(p.name for p in DEV.glob("*") if p.name.split("-")[0] in ("sgx", "tdx")) \
    if DEV.is_dir() else []

pytestmark = pytest.mark.skipif(not DEV.is_dir(), reason="../shared/vectors absent")

SGX_FIELDS = ("mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "attributes")
TDX_FIELDS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner",
              "mrownerconfig", "td_attributes", "xfam", "tee_tcb_svn", "tee_tcb_svn2", "mr_seam")


def _load(case: str) -> tuple[dict, bytes, dt.datetime]:
    folder = DEV / case
    exp = json.loads((folder / "expected.json").read_text())
    at = dt.datetime.fromisoformat(exp["verify_at"].replace("Z", "+00:00"))
    return exp, (folder / "quote.bin").read_bytes(), at


def _verifier(exp: dict, folder: pathlib.Path | None):
    cls = SgxVerifier if exp["kind"] == "sgx-quote" else TdxVerifier
    return cls(DirectoryCollateral(folder) if folder else None)


def _outcome(verifier, quote: bytes, at: dt.datetime, expected: Expected = Expected()):
    """(authentic, claims dict, tcb_status) whether verification accepts or rejects."""
    try:
        claims = verifier.verify(quote, at=at, expected=expected)
    except EvidenceError as e:
        return e.fields.get("authentic", False), e.fields.get("claims", {}), \
            e.fields.get("tcb_status"), e
    return True, claims.to_dict(), claims.tcb_status, None


def test_pinned_fingerprint_is_the_intel_root_in_roots_dir() -> None:
    from cryptography import x509
    for name in ("intel-sgx-root-ca.der", "intel-sgx-root-ca-2033.der"):
        cert = x509.load_der_x509_certificate((VECTORS / "roots" / name).read_bytes())
        assert spki_sha256(cert) == INTEL_SGX_ROOT_CA_SPKI_SHA256


@pytest.mark.parametrize("case", CASES)
def test_dev_case_matches_expected(case: str) -> None:
    exp, quote, at = _load(case)
    authentic, claims, status, err = _outcome(_verifier(exp, DEV / case), quote, at)
    assert authentic == exp["valid"]
    for name in (*SGX_FIELDS, *TDX_FIELDS, "report_data", "fmspc", "format_version"):
        if name in exp:
            assert claims[name] == exp[name], name
    if "tcb_status" in exp:
        assert status == exp["tcb_status"]
        if exp["tcb_status"] == "TcbNotSupported":
            assert isinstance(err, TcbError) and "TcbNotSupported" in str(err)
        elif exp["tcb_status"] != "Revoked":
            assert err is None, err
    assert claims["init_data"] == (claims["mrconfigid"] if exp["kind"] == "tdx-quote"
                                   else claims["config_id"])


@pytest.mark.parametrize("case", CASES)
def test_dev_case_without_collateral_is_authentic(case: str) -> None:
    exp, quote, at = _load(case)
    claims = _verifier(exp, None).verify(quote, at=at)
    assert claims.tcb_status is None
    assert claims.values["report_data"] == exp["report_data"]


@pytest.mark.parametrize("case", CASES[:3])
def test_dev_case_report_data_binding(case: str) -> None:
    exp, quote, at = _load(case)
    v = _verifier(exp, None)
    rd = bytes.fromhex(exp["report_data"])
    v.verify(quote, at=at, expected=Expected(report_data=rd))
    bad = bytes([rd[0] ^ 1]) + rd[1:]
    with pytest.raises(BindingMismatch, match="^report_data:") as info:
        v.verify(quote, at=at, expected=Expected(report_data=bad))
    assert info.value.fields["authentic"] is True


@pytest.mark.parametrize("case", CASES[:3])
def test_dev_case_expired_after_chain_window(case: str) -> None:
    exp, quote, _ = _load(case)
    after = dt.datetime.fromisoformat(exp["chain_window"]["not_after"].replace("Z", "+00:00"))
    with pytest.raises(Expired, match="^pck_chain:"):
        _verifier(exp, None).verify(quote, at=after + dt.timedelta(seconds=1))
    with pytest.raises(ArcaError):
        _verifier(exp, DEV / case).verify(quote, at=after + dt.timedelta(seconds=1))
