"""The sim platform's key material and report signing.

On first use it creates, under :func:`locations.key_dir` (mode 0700):

* ``sim-root.key``/``sim-root.pem``: the "Arca sim root", a self-signed ECDSA P-384 CA. A
  relying party trusts ``sim`` evidence only when this certificate is configured explicitly.
* ``platform.key``/``platform.pem``: the platform (attestation) key, certified by the root.

Creation is serialized by a file lock and every file is written atomically, so concurrent
first starts (daemon and ``arca simtee root-cert``) agree on one root.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from arca.host.simtee import locations
from arca.wire.descriptor import LaunchDescriptor
from arca.wire.errors import InvalidInput
from arca.wire.initdata import InitData
from arca.wire.jcs import canonicalize
from arca.wire.simreport import INIT_DATA_HASH_SIZE, SimEvidence, SimReport

ROOT_VALIDITY = dt.timedelta(days=3650)
PLATFORM_VALIDITY = dt.timedelta(days=3650)
#: The platform's security version; a real TEE bumps it with firmware updates.
PLATFORM_SVN = 1


def report_json(report: SimReport) -> dict[str, Any]:
    """The report as the JSON object the platform signs (RFC 8785 form, :func:`canonicalize`)
    and :meth:`arca.wire.simreport.SimReport.from_json` reads."""
    return {"version": report.version, "tee": report.tee, "measurement": report.measurement.hex(),
            "init_data_hash": report.init_data_hash.hex(), "report_data": report.report_data.hex(),
            "td_id": report.td_id, "platform_id": report.platform_id, "svn": report.svn,
            "debug": report.debug}


def evidence_bytes(evidence: SimEvidence) -> bytes:
    """The evidence document :meth:`arca.wire.simreport.SimEvidence.from_bytes` reads."""
    return json.dumps({"report": base64.b64encode(evidence.report_bytes).decode(),
                       "signature": base64.b64encode(evidence.signature).decode(),
                       "cert_chain": list(evidence.cert_chain)}).encode()


def init_data_hash(init_data: bytes | None) -> bytes:
    """The 48-byte init-data binding: the digest cut or zero-padded to the field (the table's
    rule, :meth:`arca.wire.tees.Tee.init_data_hash`); zeros without init-data."""
    if init_data is None:
        return bytes(INIT_DATA_HASH_SIZE)
    digest = InitData.parse(init_data).digest()
    return digest[:INIT_DATA_HASH_SIZE].ljust(INIT_DATA_HASH_SIZE, b"\0")


@dataclass(frozen=True)
class Platform:
    key: ec.EllipticCurvePrivateKey
    cert_pem: str
    root_pem: str
    platform_id: str

    def sign_report(
        self, descriptor: LaunchDescriptor, init_data: bytes | None, report_data: bytes, td_id: str,
        launch_measurement: bytes | None = None,
    ) -> SimEvidence:
        """A report about the TD, for the TEE its descriptor names; ``launch_measurement`` (a
        VM: what the platform measured of its launch) replaces the descriptor's measurement."""
        report = SimReport(
            tee=descriptor.tee,
            measurement=launch_measurement or descriptor.measurement(),
            init_data_hash=init_data_hash(init_data),
            report_data=report_data,
            td_id=td_id,
            platform_id=self.platform_id,
            svn=PLATFORM_SVN,
            debug=False,
        )
        body = canonicalize(report_json(report))
        sig = self.key.sign(body, ec.ECDSA(hashes.SHA384()))
        return SimEvidence(body, sig, (self.cert_pem, self.root_pem))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Arca"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: pathlib.Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _create(d: pathlib.Path) -> None:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    root_key = ec.generate_private_key(ec.SECP384R1())
    root_name = _name("Arca sim root (NOT a hardware root of trust)")
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA384())
    )
    pkey = ec.generate_private_key(ec.SECP384R1())
    pid = hashlib.sha256(pkey.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
    platform = (
        x509.CertificateBuilder().subject_name(_name(f"Arca sim platform {pid[:32]}"))
        .issuer_name(root_name).public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + PLATFORM_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                       critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                       False)
        .sign(root_key, hashes.SHA384())
    )
    _write(d / "sim-root.key", _pem_key(root_key), 0o600)
    _write(d / "platform.key", _pem_key(pkey), 0o600)
    _write(d / "platform.pem", platform.public_bytes(serialization.Encoding.PEM), 0o644)
    # The root certificate is written last: its presence means the set is complete.
    _write(d / "sim-root.pem", root.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_keys() -> pathlib.Path:
    """Create the sim root and platform key once; return the key directory."""
    d = locations.key_dir()
    if (d / "sim-root.pem").exists():
        return d
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(d / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / "sim-root.pem").exists():
            _create(d)
    return d


def load_platform() -> Platform:
    d = ensure_keys()
    key = serialization.load_pem_private_key((d / "platform.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
        raise InvalidInput(f"{d / 'platform.key'} is not an ECDSA P-384 key")
    cert_pem = (d / "platform.pem").read_text()
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return Platform(key, cert_pem, (d / "sim-root.pem").read_text(),
                    hashlib.sha256(spki).hexdigest())
