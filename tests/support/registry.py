"""A real OCI distribution registry (Debian's ``docker-registry``) on 127.0.0.1 for tests."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    root: pathlib.Path
    proc: subprocess.Popen[bytes]
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"


def registry_available() -> bool:
    return shutil.which("docker-registry") is not None


@contextlib.contextmanager
def run_registry(
    workdir: pathlib.Path,
    *,
    htpasswd: pathlib.Path | None = None,
    tls_cert: pathlib.Path | None = None,
    tls_key: pathlib.Path | None = None,
) -> Iterator[Registry]:
    """Start ``docker-registry`` with filesystem storage under ``workdir``; stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = [
        "version: 0.1",
        "log:",
        "  level: error",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {workdir / 'data'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    if tls_cert and tls_key:
        cfg += ["  tls:", f"    certificate: {tls_cert}", f"    key: {tls_key}"]
    if htpasswd:
        cfg += ["auth:", "  htpasswd:", "    realm: arca-test", f"    path: {htpasswd}"]
    conf = workdir / "config.yml"
    conf.write_text("\n".join(cfg) + "\n")
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(conf)], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
    )
    reg = Registry(f"127.0.0.1:{port}", workdir, proc, tls=bool(tls_cert))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "docker-registry did not start: "
                        + (workdir / "registry.log").read_text(errors="replace")[-2000:]
                    ) from None
                time.sleep(0.05)
        if not tls_cert and not htpasswd:
            urllib.request.urlopen(f"{reg.url}/v2/", timeout=5).read()  # noqa: S310
        yield reg
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# -- auth and TLS helpers (image store tests) ------------------------------------------------------
def write_htpasswd(path: pathlib.Path, user: str, password: str) -> pathlib.Path:
    """An htpasswd file with one bcrypt entry (the only scheme docker-registry accepts)."""
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{user}:{hashed}\n")
    return path


def make_tls_cert(
    workdir: pathlib.Path, host: str = "127.0.0.1"
) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed certificate for ``host`` (IP SAN): (cert PEM = the CA to trust, key PEM)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = workdir / "tls.crt", workdir / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
