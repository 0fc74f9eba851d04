"""Guest side of the KBS protocol (RCAR): attest with a fresh key, fetch JWE-wrapped secrets.
HTTP/1.1, one request per connection, on ``socket`` (+ ``ssl`` for https): ``http.client``'s
``email`` imports cost ~15 ms per TD start. Secrets are returned, never written; the key lives
only in this object; evidence comes from a caller-supplied function, so the client knows no
TEE (docs/guest.md)."""

from __future__ import annotations

import binascii
import json
import socket
import urllib.parse

from arca.wire import kbs_protocol as proto
from arca.wire import snpjson, tees
from arca.wire.errors import ArcaError, BrokerUnavailable, NotFound, PolicyDenied, WireFormatError
from arca.wire.initdata import NAME_CHARS, is_resource_path

TYPE_CHECKING = False  # typing and cryptography load after the auth request is sent
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from arca.guest.jwe import Key

#: Largest response body accepted; secrets are small and a hostile broker must not exhaust
#: memory. Status line and headers get ``MAX_HEAD_BYTES`` on top.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024


class KbsClient:
    def __init__(self, url: str, *, tee: str, evidence: Callable[[bytes], bytes],
                 ca_pem: bytes | None = None, init_data_toml: str | None = None,
                 timeout: float = 10.0, tee_key: str = "X25519") -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"KBS URL {url!r} must be http:// or https://")
        self.url = url.rstrip("/")
        self.tee = tee
        self._evidence = evidence
        self._init_data = init_data_toml
        self._timeout, self._curve = timeout, tee_key
        parts = urllib.parse.urlsplit(self.url)  # a bad port: ValueError
        self._netloc, self._prefix = parts.netloc, parts.path
        self._addr = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        self._ssl: Any = None
        if parts.scheme == "https":
            import ssl  # only for https brokers

            self._ssl = ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
        self._key: Key | None = None
        self._token: str | None = None
        #: ``{"nonce", "tee-pubkey"}`` of the last attestation: what its report data binds.
        self.runtime_data: dict[str, Any] | None = None

    def _send(self, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> Any:
        """Send one request; the caller may work while the broker does, then ``_receive``."""
        data = b"" if body is None else json.dumps(body).encode()
        hdrs = {"Host": self._netloc, "Content-Type": "application/json",
                "Content-Length": str(len(data)), "Connection": "close", **(headers or {})}
        req = f"{method} {self._prefix}{path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        try:
            conn = self._connect()
            conn.sendall(req.encode("latin-1") + data)
            return conn
        except OSError as e:  # unresolvable, refused, timeouts, TLS failures
            raise BrokerUnavailable(f"KBS {self.url} unreachable: {e}") from None

    def _connect(self) -> Any:
        sock = socket.create_connection(self._addr, timeout=self._timeout)
        if self._ssl is None:
            return sock
        return self._ssl.wrap_socket(sock, server_hostname=self._addr[0])

    def _receive(self, conn: Any, method: str,
                 path: str) -> tuple[list[tuple[str, str]], bytes]:
        raw = bytearray()
        try:
            try:
                while len(raw) <= MAX_HEAD_BYTES + MAX_RESPONSE_BYTES and (
                        chunk := conn.recv(65536)):
                    raw += chunk
            finally:
                conn.close()
            status, hdrs_in, out = parse_response(bytes(raw))
        except (OSError, ValueError) as e:  # resets, timeouts, TLS failures, broken HTTP
            raise BrokerUnavailable(f"KBS {self.url} unreachable: {e}") from None
        if status < 300:
            return hdrs_in, out
        detail = _detail(out[:64 * 1024])
        msg = f"KBS {self.url} refused {method} {path}: {status} {detail}"
        if status in (401, 403):
            raise PolicyDenied(msg, status=status, detail=detail)
        if status == 404:
            raise NotFound(msg, detail=detail)
        if status >= 500:
            raise BrokerUnavailable(msg)
        raise ArcaError(msg, status=status)

    def attest(self) -> str:
        """Run auth + attest with a fresh X25519 key; return the attestation token."""
        auth = self._send("POST", "/kbs/v0/auth", proto.Request(self.tee).to_json())
        from arca.guest import jwe  # cryptography's core loads while the broker answers

        key = jwe.generate_key(self._curve)
        headers, body = self._receive(auth, "POST", "/kbs/v0/auth")
        challenge = proto.Challenge.from_json(proto.parse_json(body, "KBS challenge"))
        cookie = _session_cookie(headers)
        runtime_data = {"nonce": challenge.nonce, "tee-pubkey": jwe.public_jwk(key)}
        self.runtime_data = runtime_data
        raw = self._evidence(proto.report_data(runtime_data, self.tee))
        try:  # JSON evidence (sim, sample, CoCo-style) is embedded as a value, binary in the
            primary: Any = json.loads(raw)  # table's envelope
        except ValueError:
            primary = {"quote": binascii.b2a_base64(raw, newline=False).decode()}
            if tees.get(self.tee).envelope == tees.SNP_REPORT and len(raw) == snpjson.REPORT_SIZE:
                primary = {"attestation_report": snpjson.to_json(raw), "cert_chain": None}
        init = None if self._init_data is None else proto.InitData("toml", self._init_data)
        att = proto.Attestation(runtime_data, primary, "", init)
        sent = self._send("POST", "/kbs/v0/attest", att.to_json(),
                          {"Cookie": f"{proto.SESSION_COOKIE}={cookie}"})
        _, body = self._receive(sent, "POST", "/kbs/v0/attest")
        reply = proto.parse_json(body, "KBS attest response")
        if not isinstance(reply, dict) or not isinstance(reply.get("token"), str):
            raise WireFormatError("KBS attest response must be {\"token\": <JWT>}")
        self._key, self._token = key, reply["token"]
        return self._token

    def get_resource(self, path: str) -> bytes:
        """Fetch ``repo/type/tag``; return its decrypted plaintext (attesting first if needed)."""
        if not is_resource_path(path):
            raise ValueError(f"resource path {path!r} is not repo/type/tag")
        for attempt in (0, 1):
            if self._token is None or self._key is None:
                self.attest()
            assert self._token is not None and self._key is not None
            try:
                sent = self._send("GET", f"/kbs/v0/resource/{path}",
                                  headers={"Authorization": f"Bearer {self._token}"})
                from arca.guest import jwe  # loaded by attest

                _, body = self._receive(sent, "GET", f"/kbs/v0/resource/{path}")
            except PolicyDenied as e:  # an expired token earns one fresh attestation
                if attempt or e.fields.get("status") != 401:
                    raise
                self._token = None
                continue
            return jwe.decrypt(proto.parse_json(body, "KBS resource response"), self._key)
        raise AssertionError("unreachable")


def parse_response(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of one HTTP/1.x response read to EOF; ValueError if malformed,
    truncated or over the size limits (Content-Length and chunked bodies)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or len(head) > MAX_HEAD_BYTES:
        raise ValueError("truncated or oversized HTTP response head")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit() or rest[3:4] not in ("", " "):
        raise ValueError(f"bad HTTP status line {status_line[:80]!r}")
    headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines)]
    fields = {k.lower(): v for k, v in headers}
    if fields.get("transfer-encoding", "").lower() == "chunked":
        out, rest_b = bytearray(), body
        while True:
            size_line, sep, rest_b = rest_b.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if not sep or size < 0 or len(out) + size > MAX_RESPONSE_BYTES or \
                    rest_b[size:size + 2] != b"\r\n":
                raise ValueError("bad or truncated chunked HTTP body")
            if size == 0:
                return int(rest[:3]), headers, bytes(out)
            out += rest_b[:size]
            rest_b = rest_b[size + 2:]
    if "content-length" in fields:
        n = int(fields["content-length"])
        if not 0 <= n <= len(body):
            raise ValueError("truncated HTTP body")
        body = body[:n]
    if len(body) > MAX_RESPONSE_BYTES:
        raise ValueError(f"KBS response exceeds {MAX_RESPONSE_BYTES} B")
    return int(rest[:3]), headers, body


def _session_cookie(headers: list[tuple[str, str]]) -> str:
    for name, value in headers:
        if name.lower() == "set-cookie":
            name, _, token = value.partition(";")[0].strip().partition("=")
            if name == proto.SESSION_COOKIE and token and set(token) <= NAME_CHARS:
                return token
    raise WireFormatError(f"KBS auth response has no {proto.SESSION_COOKIE} cookie")


def _detail(body: bytes) -> str:
    try:
        problem = json.loads(body)
        return f"{problem.get('type', '').rsplit('/', 1)[-1]}: {problem.get('detail', '')}"
    except (ValueError, AttributeError, RecursionError):  # a hostile body
        return body[:200].decode(errors="replace")
