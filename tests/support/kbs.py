"""Test support for the KBS: a throw-away sim authority (root + platform key) that mints sim
evidence, sample evidence, and a real ``arca kbs serve`` process on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import pathlib
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from arca._internal.net import ServerDidNotStart, wait_until_serving
from arca.host.simtee.platform import evidence_bytes, report_json
from arca.wire.jcs import canonicalize
from arca.wire.simreport import SimEvidence, SimReport
from tests.support.registry import free_port

MEASUREMENT = bytes.fromhex("ab" * 48)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          issuer_key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA384()))


@dataclass
class SimAuthority:
    """A sim root and one platform key certified by it."""

    name: str = "Test Sim Root"
    root_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    platform_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))

    def __post_init__(self) -> None:
        self.root = _cert(self.name, self.root_key, self.name, self.root_key, True)
        self.platform = _cert("Test Sim Platform", self.platform_key, self.name, self.root_key,
                              False)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def evidence(self, report_data: bytes, *, measurement: bytes = MEASUREMENT,
                 init_data_hash: bytes = bytes(48), debug: bool = False) -> bytes:
        report = SimReport(measurement=measurement, init_data_hash=init_data_hash,
                           report_data=report_data, td_id="td-1", platform_id="plat-1",
                           debug=debug)
        raw = canonicalize(report_json(report))
        sig = self.platform_key.sign(raw, ec.ECDSA(hashes.SHA384()))
        chain = (self.platform.public_bytes(serialization.Encoding.PEM).decode(),
                 self.root_pem.decode())
        return evidence_bytes(SimEvidence(raw, sig, chain))


def sample_evidence(report_data: bytes) -> bytes:
    return json.dumps({"svn": "1", "report_data": base64.b64encode(report_data).decode()}).encode()


def admin_keypair(directory: pathlib.Path) -> tuple[ed25519.Ed25519PrivateKey, pathlib.Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = directory / "admin.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    priv = directory / "admin.key"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key, pub


@dataclass
class KbsProcess:
    url: str
    proc: subprocess.Popen[bytes]
    data_dir: pathlib.Path
    log: pathlib.Path

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def start_kbs(data_dir: pathlib.Path, *args: str, port: int | None = None,
              scheme: str = "http", verify: str | bool = True,
              ready_timeout: float = 30.0) -> KbsProcess:
    """Start ``arca kbs serve`` (own process group) and wait until /healthz answers."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"kbs-{port}.log"
    cmd = [sys.executable, "-c", "from arca.cli.main import main; main()", "kbs", "serve",
           "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}", *args]
    if scheme == "http" and "--insecure-http" not in args:
        cmd.append("--insecure-http")
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"{scheme}://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify

    def healthy() -> bool:
        try:
            return httpx.get(url + "/healthz", verify=ctx, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until_serving(proc, "127.0.0.1", port, what="KBS", timeout=ready_timeout, log=log,
                           ready=healthy)
    except ServerDidNotStart:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise
    return KbsProcess(url, proc, data_dir, log)


@contextlib.contextmanager
def running_kbs(data_dir: pathlib.Path, *args: str, **kw: object) -> Iterator[KbsProcess]:
    kbs = start_kbs(data_dir, *args, **kw)  # type: ignore[arg-type]
    try:
        yield kbs
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(kbs.proc.pid, signal.SIGTERM)
        try:
            kbs.proc.wait(10)
        except subprocess.TimeoutExpired:
            kbs.kill()


@contextlib.contextmanager
def sim_kbs(d: pathlib.Path, *args: str
            ) -> Iterator[tuple[KbsProcess, SimAuthority, ed25519.Ed25519PrivateKey]]:
    """A KBS with its data under ``d``, trusting a new sim root and an admin key made in ``d``
    (``args``: more of its options); yields it, the sim authority and the admin key."""
    sim = SimAuthority()
    (d / "root.pem").write_bytes(sim.root_pem)
    key, pub = admin_keypair(d)
    with running_kbs(d / "data", "--trust-sim-root", str(d / "root.pem"),
                     "--admin-public-key", str(pub), *args) as server:
        yield server, sim, key


def make_tls(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A throw-away CA and a server certificate for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    import ipaddress

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test KBS CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.pem", directory / "tls.crt", directory / "tls.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths
