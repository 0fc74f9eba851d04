"""A tiny in-test ``sim`` TEE device (contract §4) for the guest agent's tests.

Serves one unix socket in a thread and answers each ``{"report_data": hex}`` line with real
``SimEvidence`` signed by a throw-away platform key under a throw-away root. The fields it
reports (measurement, init-data hash, report-data override) are settable, so tests can play a
lying host or a replaying device.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import os
import socket
import threading
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from arca.host.simtee.platform import evidence_bytes, report_json
from arca.wire.jcs import canonicalize
from arca.wire.simreport import SimEvidence, SimReport


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA384())
    )


@functools.cache
def authority() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate]:
    """One throw-away platform key, root and platform certificate per test process, so every
    device chains to the same root (a KBS can trust it)."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    key = ec.generate_private_key(ec.SECP384R1())
    root = _cert("test sim root", root_key, "test sim root", root_key, True)
    return key, root, _cert("test sim platform", key, "test sim root", root_key, False)



@dataclass
class SimDeviceServer:
    path: str
    measurement: bytes
    init_data_hash: bytes = bytes(48)
    td_id: str = "test-td"
    #: When set, the device answers with this report data instead of the requested one.
    report_data_override: bytes | None = None
    #: When set, the device answers ``{"error": ...}``.
    error: str | None = None
    requests: list[bytes] = field(default_factory=list)
    #: The report's TEE (``vm``: a launch-measured VM's security processor).
    tee: str = "sim"

    def __post_init__(self) -> None:
        self.key, self.root, self.platform = authority()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def evidence(self, report_data: bytes) -> bytes:
        report = SimReport(self.measurement, self.init_data_hash,
                           self.report_data_override or report_data, self.td_id, "test-platform",
                           tee=self.tee)
        body = canonicalize(report_json(report))
        sig = self.key.sign(body, ec.ECDSA(hashes.SHA384()))
        chain = tuple(c.public_bytes(serialization.Encoding.PEM).decode()
                      for c in (self.platform, self.root))
        return evidence_bytes(SimEvidence(body, sig, chain))

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                line = b""
                while not line.endswith(b"\n") and (chunk := conn.recv(4096)):
                    line += chunk
                try:
                    rd = bytes.fromhex(json.loads(line)["report_data"])
                    self.requests.append(rd)
                    answer = ({"error": self.error} if self.error else
                              {"evidence": base64.b64encode(self.evidence(rd)).decode()})
                except (ValueError, KeyError) as e:
                    answer = {"error": f"bad request: {e}"}
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)
