"""Hardware evidence through a real ``arca kbs serve`` (issue 13, item 8): a hardware TEE is
accepted only when every collateral check runs — revocation, QE identity, TDX module identity,
TCB level (SNP: the ARK's CRL and an explicit minimum TCB) — against current collateral from a
directory or fetched by the KBS (Intel PCS / AMD KDS, here a local server) and cached.

The attack: a TDX quote whose QE report is signed by the platform's genuine PCK key but comes
from a quoting enclave that is not Intel's (another MRSIGNER) — a rogue QE on a real machine
can sign anything. A KBS without collateral used to enable the tdx verifier anyway, skip the QE
Identity check and appraise the missing TCB status as affirming: the rogue quote got a secret.

The quotes and reports come from the test factories (``tests/support/dcap_factory.py``,
``snp_factory.py``) under throw-away roots, pinned with ``--insecure-dcap-root`` /
``--insecure-amd-ark`` (the only difference from a production KBS).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import pathlib
import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from jwcrypto import jwe

from arca.kbs.tokens import make_admin_token
from arca.wire import kbs_protocol as proto
from tests.integration.test_kbs_protocol import PROBLEM, ec_key
from tests.support.collateral_server import collateral_server
from tests.support.dcap_factory import FMSPC, DcapFactory, make_cert
from tests.support.kbs import admin_keypair, running_kbs
from tests.support.snp_factory import PSS, _name, build_case, make_pki

pytestmark = pytest.mark.integration
SECRET = b"hardware-only secret"
NOW = dt.datetime.now(dt.UTC)
SOON = NOW + dt.timedelta(days=20)
MRTD = "33" * 48  # the factory's TD measurement
ROGUE_QE = b"\x99" * 32  # MRSIGNER of a quoting enclave that is not Intel's


def _dcap_bundle(factory: DcapFactory, report_data: bytes, **kw: Any) -> Any:
    return factory.build(tee="tdx", report_data=report_data, tcb_next_update=SOON,
                         qe_next_update=SOON, crl_next_update=SOON, **kw)


def _root_pem(factory: DcapFactory) -> bytes:
    root = make_cert("Test SGX Root CA", factory.root_key, "Test SGX Root CA",
                     factory.root_key, 1, ca=True)
    return root.public_bytes(serialization.Encoding.PEM)


class Guest:
    """One RCAR session against the KBS with hardware evidence made by ``make(report_data)``."""

    def __init__(self, url: str, tee: str) -> None:
        self.client = httpx.Client(base_url=url)
        self.tee = tee
        self.priv, self.pub = ec_key()

    def auth(self) -> httpx.Response:
        return self.client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": self.tee})

    def attest(self, make: Any) -> httpx.Response:
        r = self.auth()
        assert r.status_code == 200, r.text
        rd = {"nonce": r.json()["nonce"], "tee-pubkey": self.pub}
        quote = base64.b64encode(make(proto.report_data(rd, "sim"))).decode()
        return self.client.post("/kbs/v0/attest", json={
            "runtime-data": rd,
            "tee-evidence": {"primary_evidence": {"quote": quote}, "additional_evidence": ""}})

    def secret(self) -> httpx.Response:
        return self.client.get("/kbs/v0/resource/default/key/hw")

    def decrypt(self, r: httpx.Response) -> bytes:
        obj = jwe.JWE()
        obj.deserialize(json.dumps(r.json()), key=self.priv)
        return bytes(obj.payload)


def _admin(url: str, key: Any, *calls: tuple[str, str, Any]) -> None:
    headers = {"Authorization": f"Bearer {make_admin_token(key, lifetime=60)}"}
    for method, path, body in calls:
        r = httpx.request(method, url + path, headers=headers,
                          **({"content": body} if isinstance(body, bytes) else {"json": body}))
        assert r.status_code == 200, r.text


def _problem(r: httpx.Response, status: int, name: str, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == PROBLEM + name, r.text
    for w in words:
        assert w in r.json()["detail"], r.text


@pytest.fixture()
def dcap(tmp_path: pathlib.Path) -> tuple[DcapFactory, pathlib.Path, Any, pathlib.Path]:
    factory = DcapFactory()
    (tmp_path / "root.pem").write_bytes(_root_pem(factory))
    key, pub = admin_keypair(tmp_path)
    return factory, tmp_path / "root.pem", key, pub


def _provision(url: str, key: Any, claim: str, value: str) -> None:
    _admin(url, key, ("POST", "/kbs/v0/reference-values", {"name": claim, "values": [value]}),
           ("POST", "/kbs/v0/resource/default/key/hw", SECRET))


def test_without_collateral_no_hardware_tee_is_enabled_and_the_rogue_qe_gets_nothing(
        tmp_path: pathlib.Path, dcap: Any) -> None:
    factory, root, key, pub = dcap
    with running_kbs(tmp_path / "data", "--insecure-dcap-root", str(root),
                     "--admin-public-key", str(pub)) as kbs:
        log = kbs.log.read_text()
        for tee in ("sgx", "tdx", "snp"):
            assert f"{tee} evidence NOT accepted" in log, log
        assert "no collateral source" in log and "no minimum TCB" in log, log
        _provision(kbs.url, key, "tdx.mrtd", MRTD)
        guest = Guest(kbs.url, "tdx")
        _problem(guest.auth(), 401, "AttestationError", "not accepted")
        # The attack as it was run: the rogue QE's quote, bound to this session.
        r = guest.client.post("/kbs/v0/attest", json={
            "runtime-data": {"nonce": "x", "tee-pubkey": guest.pub},
            "tee-evidence": {"primary_evidence": {"quote": base64.b64encode(
                _dcap_bundle(factory, bytes(64), qe_mrsigner=ROGUE_QE).quote).decode()}}})
        assert r.status_code == 401, r.text
        _problem(guest.secret(), 401, "TokenNotFound")


def test_collateral_directory_refuses_rogue_qe_and_revoked_pck_and_releases_to_genuine(
        tmp_path: pathlib.Path, dcap: Any) -> None:
    factory, root, key, pub = dcap
    coll = tmp_path / "collateral"
    coll.mkdir()
    for name, data in _dcap_bundle(factory, bytes(64)).collateral.items():
        (coll / name).write_bytes(data)
    with running_kbs(tmp_path / "data", "--insecure-dcap-root", str(root),
                     "--collateral", str(coll), "--admin-public-key", str(pub)) as kbs:
        assert "tdx evidence accepted: collateral: directory" in kbs.log.read_text()
        _provision(kbs.url, key, "tdx.mrtd", MRTD)
        # The attack: a non-Intel QE's quote (genuine PCK signature) is refused.
        rogue = Guest(kbs.url, "tdx")
        _problem(rogue.attest(lambda rd: _dcap_bundle(factory, rd, qe_mrsigner=ROGUE_QE).quote),
                 401, "AttestationError", "qe_identity")
        _problem(rogue.secret(), 401, "TokenNotFound")
        # A PCK certificate on the CRL is refused, the genuine quote gets its secret: the
        # refusals above are the checks at work, not a broken configuration.
        bundle = _dcap_bundle(factory, bytes(64), revoke=("pck",))
        (coll / "pck_crl.der").write_bytes(bundle.collateral["pck_crl.der"])
        revoked = Guest(kbs.url, "tdx")
        _problem(revoked.attest(lambda rd: _dcap_bundle(factory, rd).quote), 401,
                 "AttestationError", "revoked")
        (coll / "pck_crl.der").write_bytes(_dcap_bundle(factory, bytes(64))
                                           .collateral["pck_crl.der"])
        genuine = Guest(kbs.url, "tdx")
        r = genuine.attest(lambda rd: _dcap_bundle(factory, rd).quote)
        assert r.status_code == 200, r.text
        r = genuine.secret()
        assert r.status_code == 200, r.text
        assert genuine.decrypt(r) == SECRET


def test_a_directory_without_crls_does_not_enable_tdx(tmp_path: pathlib.Path, dcap: Any) -> None:
    factory, root, _, _ = dcap
    coll = tmp_path / "collateral"
    coll.mkdir()
    for name, data in _dcap_bundle(factory, bytes(64)).collateral.items():
        if name not in ("pck_crl.der", "root_ca_crl.der"):
            (coll / name).write_bytes(data)
    with running_kbs(tmp_path / "data", "--insecure-dcap-root", str(root),
                     "--collateral", str(coll)) as kbs:
        log = kbs.log.read_text()
        assert "tdx evidence NOT accepted" in log and "pck_crl.der, root_ca_crl.der" in log, log
        _problem(Guest(kbs.url, "tdx").auth(), 401, "AttestationError", "not accepted")


def test_collateral_fetched_from_pcs_is_cached_and_checked(tmp_path: pathlib.Path,
                                                           dcap: Any) -> None:
    factory, root, key, pub = dcap
    with collateral_server() as pcs:
        pcs.pcs("tdx", FMSPC.hex(), _dcap_bundle(factory, bytes(64)).collateral)
        with running_kbs(tmp_path / "data", "--insecure-dcap-root", str(root),
                         "--pcs-url", pcs.url, "--admin-public-key", str(pub)) as kbs:
            assert "tdx evidence accepted: collateral: Intel PCS" in kbs.log.read_text()
            _provision(kbs.url, key, "tdx.mrtd", MRTD)
            rogue = Guest(kbs.url, "tdx")
            _problem(rogue.attest(lambda rd: _dcap_bundle(factory, rd,
                                                          qe_mrsigner=ROGUE_QE).quote),
                     401, "AttestationError", "qe_identity")
            fetched = sorted(set(pcs.seen))
            assert any("/tcb?fmspc=" in p for p in fetched) and \
                "/IntelSGXRootCA.der" in fetched and any("pckcrl" in p for p in fetched)
            # The service goes away: the cache in the data directory still serves.
            pcs.routes.clear()
            before = len(pcs.seen)
            genuine = Guest(kbs.url, "tdx")
            r = genuine.attest(lambda rd: _dcap_bundle(factory, rd).quote)
            assert r.status_code == 200, r.text
            assert genuine.decrypt(genuine.secret()) == SECRET
            assert len(pcs.seen) == before  # nothing fetched again within the cache period
        assert any((tmp_path / "data" / "collateral-cache" / "intel").iterdir())


# -- SEV-SNP: the ARK's CRL from KDS and the minimum TCB ----------------------------------------

MIN_TCB = "Milan:bootloader=3,tee=0,snp=8,microcode=115"  # the factory's REPORTED_TCB


def _crl(revoked: tuple[int, ...] = ()) -> bytes:
    from cryptography import x509

    pki = make_pki("Milan")
    b = (x509.CertificateRevocationListBuilder().issuer_name(_name("ARK-Milan"))
         .last_update(NOW - dt.timedelta(days=1)).next_update(SOON))
    for serial in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(NOW - dt.timedelta(days=1)).build())
    return b.sign(pki.ark_key, hashes.SHA384(), rsa_padding=PSS).public_bytes(
        serialization.Encoding.DER)


def _snp_kds(server: Any, crl: bytes, reported: dict[str, int] | None = None) -> None:
    case = build_case("Milan", 3, **({"reported_tcb": reported} if reported else {}))
    tcb = case.fields.reported_tcb
    query = (f"/vcek/v1/Milan/{case.fields.chip_id.hex()}?blSPL={tcb['bootloader']:02d}"
             f"&teeSPL={tcb['tee']:02d}&snpSPL={tcb['snp']:02d}"
             f"&ucodeSPL={tcb['microcode']:02d}")
    from cryptography import x509

    vcek_der = x509.load_pem_x509_certificate(case.files["vcek.pem"]).public_bytes(
        serialization.Encoding.DER)
    server.kds("Milan", vcek=vcek_der, ask=case.files["ask.pem"], ark=case.files["ark.pem"],
               crl=crl, vcek_query=query)


def _snp_report(rd: bytes, reported: dict[str, int] | None = None) -> bytes:
    kw: dict[str, Any] = {"report_data": rd}
    if reported:
        kw["reported_tcb"] = reported
    return build_case("Milan", 3, **kw).report


def test_snp_needs_a_minimum_tcb_and_the_arks_crl(tmp_path: pathlib.Path) -> None:
    pki = make_pki("Milan")
    (tmp_path / "ark.pem").write_bytes(pki.ark_pem)
    key, pub = admin_keypair(tmp_path)
    measurement = "11" * 48
    low = {"bootloader": 3, "tee": 0, "snp": 7, "microcode": 115}
    with collateral_server() as kds:
        _snp_kds(kds, _crl())
        _snp_kds(kds, _crl(), low)
        common = ("--insecure-amd-ark", str(tmp_path / "ark.pem"), "--kds-url", kds.url,
                  "--admin-public-key", str(pub))
        with running_kbs(tmp_path / "no-min", *common) as kbs:
            assert "snp evidence NOT accepted: no minimum TCB" in kbs.log.read_text()
            _problem(Guest(kbs.url, "snp").auth(), 401, "AttestationError", "not accepted")
        with running_kbs(tmp_path / "data", *common, "--snp-min-tcb", MIN_TCB) as kbs:
            assert "snp evidence accepted: minimum TCB" in kbs.log.read_text()
            _provision(kbs.url, key, "snp.measurement", measurement)
            good = Guest(kbs.url, "snp")
            r = good.attest(_snp_report)
            assert r.status_code == 200, r.text
            assert good.decrypt(good.secret()) == SECRET
            assert "/vcek/v1/Milan/crl" in kds.seen
            # Below the minimum TCB: verified, but not affirming, so no secret.
            old = Guest(kbs.url, "snp")
            r = old.attest(lambda rd: _snp_report(rd, low))
            assert r.status_code == 200, r.text
            _problem(old.secret(), 403, "PolicyDeny")
        # AMD revokes the ASK (serial of the factory's ASK): refused.
        kds.routes["/vcek/v1/Milan/crl"] = (_crl((0x10001,)), {})
        with running_kbs(tmp_path / "revoked", *common, "--snp-min-tcb", MIN_TCB) as kbs:
            _provision(kbs.url, key, "snp.measurement", measurement)
            revoked = Guest(kbs.url, "snp")
            _problem(revoked.attest(_snp_report), 401, "AttestationError", "revoked")
            _problem(revoked.secret(), 401, "TokenNotFound")


def test_every_worker_says_at_start_up_which_tees_it_accepts(tmp_path: pathlib.Path) -> None:
    """The shipped Deployment runs 2 workers: each states its decision (INFO and WARNING),
    and so does the parent that forks them (its start-up line is computed from the same)."""
    with running_kbs(tmp_path / "data", "--workers", "2", "--collateral-online") as kbs:
        for _ in range(50):
            log = kbs.log.read_text()
            if log.count("snp evidence NOT accepted") >= 3:
                break
            time.sleep(0.2)
        assert log.count("tdx evidence accepted: collateral: Intel PCS") == 3, log
        assert log.count("snp evidence NOT accepted: no minimum TCB") == 3, log
