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

import pytest

from arca._internal.net import wait_until_serving


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


#: For tests that pull from a real registry into a real store.
NEEDS_REGISTRY_AND_ROOT = pytest.mark.skipif(
    not registry_available() or os.geteuid() != 0,
    reason="needs docker-registry, umoci, skopeo and root")


@contextlib.contextmanager
def run_registry(
    workdir: pathlib.Path,
    *,
    htpasswd: pathlib.Path | None = None,
    tls_cert: pathlib.Path | None = None,
    tls_key: pathlib.Path | None = None,
    token_auth: dict[str, str] | None = None,
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
    elif token_auth:  # keys: realm, service, issuer, rootcertbundle (see TokenServer)
        cfg += ["auth:", "  token:"] + [f"    {k}: {v}" for k, v in token_auth.items()]
    conf = workdir / "config.yml"
    conf.write_text("\n".join(cfg) + "\n")
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(conf)], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
    )
    reg = Registry(f"127.0.0.1:{port}", workdir, proc, tls=bool(tls_cert))
    try:
        wait_until_serving(proc, "127.0.0.1", port, what="docker-registry", timeout=20,
                           log=workdir / "registry.log")
        if not tls_cert and not htpasswd and not token_auth:
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


class TokenServer:
    """A Docker registry token service (bearer auth) on 127.0.0.1: checks basic credentials,
    grants the requested repository actions to known users (nothing to anonymous callers),
    signs ES256 JWTs whose ``x5c`` header chains to :attr:`cert` (the registry's
    ``rootcertbundle``)."""

    service = "arca-test-registry"
    issuer = "arca-test-token-issuer"

    def __init__(self, workdir: pathlib.Path, users: dict[str, str]) -> None:
        import http.server
        import threading

        self.users = users
        self.requests: list[dict[str, object]] = []
        self.cert, self.key = make_tls_cert(workdir / "token-signing")
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer._handle(self)

        self._srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._srv.server_address[1]}/token"

    def registry_config(self) -> dict[str, str]:
        return {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                "rootcertbundle": str(self.cert)}

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def _handle(self, req: object) -> None:
        import base64
        import json
        import urllib.parse

        h = req  # http.server.BaseHTTPRequestHandler
        url = urllib.parse.urlparse(h.path)  # type: ignore[attr-defined]
        query = urllib.parse.parse_qs(url.query)
        user = None
        auth = h.headers.get("Authorization", "")  # type: ignore[attr-defined]
        if auth.startswith("Basic "):
            u, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(u) != pw:
                body = b'{"details":"bad credentials"}'
                h.send_response(401)  # type: ignore[attr-defined]
                h.send_header("Content-Length", str(len(body)))  # type: ignore[attr-defined]
                h.end_headers()  # type: ignore[attr-defined]
                h.wfile.write(body)  # type: ignore[attr-defined]
                return
            user = u
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if user is not None:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        self.requests.append({"user": user, "scope": query.get("scope", [])})
        token = self._sign({"iss": self.issuer, "sub": user or "", "aud": self.service,
                            "access": access})
        body = json.dumps({"token": token, "access_token": token}).encode()
        h.send_response(200)  # type: ignore[attr-defined]
        h.send_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        h.send_header("Content-Length", str(len(body)))  # type: ignore[attr-defined]
        h.end_headers()  # type: ignore[attr-defined]
        h.wfile.write(body)  # type: ignore[attr-defined]

    def _sign(self, claims: dict[str, object]) -> str:
        import base64
        import json
        import secrets

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [
            base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
        payload = {**claims, "iat": now - 5, "nbf": now - 5, "exp": now + 300,
                   "jti": secrets.token_hex(8)}
        signing_input = (b64(json.dumps(header).encode()) + "." +
                         b64(json.dumps(payload).encode()))
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
