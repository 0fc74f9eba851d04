"""SimVerifier: accepts genuine sim evidence, refuses every forgery with the right typed error."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arca.errors import (
    BindingMismatch,
    ChainInvalid,
    ConfigError,
    EvidenceError,
    Expired,
    MalformedEvidence,
    SignatureInvalid,
    UntrustedRoot,
)
from arca.host.simtee.platform import evidence_bytes, report_json
from arca.verifier.base import Expected, Verifier, VerifierOptions
from arca.verifier.sim import MAX_CHAIN_LENGTH, SimVerifier, from_options
from arca.wire.jcs import canonicalize
from arca.wire.simreport import SimEvidence, SimReport

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
RD = bytes(range(64))
INIT = bytes(range(100, 148))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(subject_key, issuer_key, subject: str, issuer: str, *, ca: bool,
              start: dt.datetime = NOW - dt.timedelta(days=30),
              end: dt.datetime = NOW + dt.timedelta(days=30)) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return b.sign(issuer_key, hashes.SHA384())


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class Pki:
    def __init__(self, root_name: str = "Arca sim root") -> None:
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.root = make_cert(self.root_key, self.root_key, root_name, root_name, ca=True)
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.cert = make_cert(self.key, self.root_key, "platform", root_name, ca=False)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def report(**over) -> SimReport:
    fields = dict(measurement=b"\x11" * 48, init_data_hash=INIT, report_data=RD, td_id="c1",
                  platform_id="p" * 64, svn=1, debug=False)
    fields.update(over)
    return SimReport(**fields)


def evidence(pki: Pki, rep: SimReport | None = None, *, key=None, chain=None,
             body: bytes | None = None) -> bytes:
    body = body if body is not None else canonicalize(report_json(rep or report()))
    sig = (key or pki.key).sign(body, ec.ECDSA(hashes.SHA384()))
    chain = chain if chain is not None else (pem(pki.cert), pem(pki.root))
    return evidence_bytes(SimEvidence(body, sig, tuple(chain)))


def test_genuine_evidence_gives_claims(pki: Pki) -> None:
    v = SimVerifier([pki.root])
    assert isinstance(v, Verifier) and v.tee == "sim"
    claims = v.verify(evidence(pki), expected=Expected(RD, INIT), at=NOW)
    assert claims.to_dict() == {
        "tee": "sim", "measurement": "11" * 48, "init_data": INIT.hex(),
        "report_data": RD.hex(), "td_id": "c1", "platform_id": "p" * 64, "svn": 1,
        "debug": False, "tcb_status": None, "advisory_ids": [],
    }
    assert claims.format_version == 1


def test_roots_as_pem_bytes_or_str_and_chain_without_root(pki: Pki) -> None:
    ev = evidence(pki, chain=(pem(pki.cert),))
    for root in (pem(pki.root), pem(pki.root).encode()):
        assert SimVerifier([root]).verify(ev, at=NOW).values["td_id"] == "c1"


def test_no_trusted_root_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        SimVerifier([])
    with pytest.raises(ConfigError):
        SimVerifier([b"not a certificate"])
    with pytest.raises(ConfigError):
        from_options(VerifierOptions())


def test_from_options_reads_the_root_file(pki: Pki, tmp_path) -> None:
    f = tmp_path / "root.pem"
    f.write_text(pem(pki.root))
    v = from_options(VerifierOptions(extra={"sim_root": str(f)}))
    assert v.verify(evidence(pki), at=NOW).values["svn"] == 1
    with pytest.raises(ConfigError):
        from_options(VerifierOptions(extra={"sim_root": str(tmp_path / "missing.pem")}))


def _forged_chain_same_names(pki: Pki) -> tuple[object, tuple[str, ...]]:
    """An attacker's root with the genuine root's name, and a platform cert under it."""
    fake = Pki()
    return fake.key, (pem(fake.cert), pem(fake.root))


FAILURES = {
    "other_root": lambda p: (evidence(Pki("attacker root")), UntrustedRoot),
    "same_name_other_key": lambda p: (evidence(p, key=_forged_chain_same_names(p)[0],
                                               chain=_forged_chain_same_names(p)[1]), ChainInvalid),
    "wrong_signing_key": lambda p: (evidence(p, key=ec.generate_private_key(ec.SECP384R1())),
                                    SignatureInvalid),
    "tampered_report": lambda p: (_tamper(evidence(p)), SignatureInvalid),
    "report_data_mismatch": lambda p: (evidence(p, report(report_data=b"\0" * 64)),
                                       BindingMismatch),
    "init_data_mismatch": lambda p: (evidence(p, report(init_data_hash=b"\0" * 48)),
                                     BindingMismatch),
    "p256_platform_key": lambda p: _p256(p),
    "leaf_signs_leaf": lambda p: _leaf_issuer(p),
    "chain_too_long": lambda p: (evidence(p, chain=(pem(p.cert),) * (MAX_CHAIN_LENGTH + 1)),
                                 MalformedEvidence),
    "not_json": lambda p: (b"garbage", MalformedEvidence),
    "bad_cert_pem": lambda p: (evidence(p, chain=("-----BEGIN CERTIFICATE-----\nAA==\n",)),
                               MalformedEvidence),
    "report_missing_field": lambda p: (
        evidence(p, body=json.dumps({"version": 1}).encode()), MalformedEvidence),
}


def _tamper(ev: bytes) -> bytes:
    obj = json.loads(ev)
    rep = json.loads(base64.b64decode(obj["report"]))
    rep["td_id"] = "someone-else"
    obj["report"] = base64.b64encode(canonicalize(rep)).decode()
    return json.dumps(obj).encode()


def _p256(p: Pki):
    k = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(k, p.root_key, "platform", "Arca sim root", ca=False)
    body = canonicalize(report_json(report()))
    sig = k.sign(body, ec.ECDSA(hashes.SHA384()))
    return evidence_bytes(SimEvidence(body, sig, (pem(cert), pem(p.root)))), SignatureInvalid


def _leaf_issuer(p: Pki):
    k = ec.generate_private_key(ec.SECP384R1())
    cert = make_cert(k, p.key, "leaf", "platform", ca=False)
    return evidence(p, key=k, chain=(pem(cert), pem(p.cert), pem(p.root))), ChainInvalid


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_forgeries_are_refused_with_typed_errors(pki: Pki, case: str) -> None:
    ev, err = FAILURES[case](pki)
    with pytest.raises(err) as info:
        SimVerifier([pki.root]).verify(ev, expected=Expected(RD, INIT), at=NOW)
    assert str(info.value)  # a human message naming the problem
    assert info.value.fields.get("tee") == "sim"


@pytest.mark.parametrize("at", [NOW - dt.timedelta(days=31), NOW + dt.timedelta(days=31)])
def test_outside_validity_is_expired(pki: Pki, at: dt.datetime) -> None:
    with pytest.raises(Expired):
        SimVerifier([pki.root]).verify(evidence(pki), at=at)


def test_expected_values_must_have_exact_length(pki: Pki) -> None:
    v = SimVerifier([pki.root])
    with pytest.raises(ValueError):
        v.verify(evidence(pki), expected=Expected(report_data=RD[:32]), at=NOW)
    with pytest.raises(ValueError):
        v.verify(evidence(pki), expected=Expected(init_data_hash=INIT + b"\0"), at=NOW)
    with pytest.raises(ValueError):
        v.verify(evidence(pki), at=NOW.replace(tzinfo=None))


def test_genuine_platform_of_the_daemon_verifies(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path))
    from arca.host.simtee.locations import root_cert_path
    from arca.host.simtee.platform import load_platform
    from arca.wire.descriptor import LaunchDescriptor, ProcessSpec

    plat = load_platform()
    desc = LaunchDescriptor("sim", "sha256:" + "a" * 64, "sha256:" + "b" * 64,
                            ProcessSpec(("/bin/true",)))
    ev = evidence_bytes(plat.sign_report(desc, None, RD, "td-1"))
    claims = SimVerifier([root_cert_path().read_bytes()]).verify(
        ev, expected=Expected(RD, bytes(48)))
    assert claims.values["measurement"] == desc.measurement().hex()
    assert claims.values["td_id"] == "td-1"
    assert claims.values["platform_id"] == plat.platform_id


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes_only_typed_errors(pki: Pki, data: bytes) -> None:
    with pytest.raises(EvidenceError):
        SimVerifier([pki.root]).verify(data, at=NOW)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_fuzz_mutated_evidence_is_refused_or_unchanged(pki: Pki, pos: int, byte: int) -> None:
    good = evidence(pki)
    v = SimVerifier([pki.root])
    reference = v.verify(good, at=NOW)
    data = bytearray(good)
    data[pos % len(data)] = byte
    try:
        claims = v.verify(bytes(data), at=NOW)
    except EvidenceError:
        return
    # Only a mutation that keeps the signed report (e.g. JSON whitespace) may pass.
    assert claims == reference
