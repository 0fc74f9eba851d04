"""Guest side of the KBS protocol (RCAR): attest with a fresh key, fetch JWE-wrapped secrets.

Standard library HTTP (``urllib``) with the broker's CA, ``cryptography`` for keys. Secrets are
returned to the caller and never written anywhere; the private key lives only in this object.
Evidence comes from a caller-supplied function, so the client knows no TEE.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from arca.guest import jwe
from arca.wire import kbs_protocol as proto
from arca.wire.errors import (
    ArcaError,
    BrokerUnavailable,
    NotFound,
    PolicyDenied,
    WireFormatError,
)

#: Largest response accepted; secrets are small and a hostile broker must not exhaust memory.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_PATH = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class KbsClient:
    def __init__(self, url: str, *, tee: str, evidence: Callable[[bytes], bytes],
                 ca_pem: bytes | None = None, init_data_toml: str | None = None,
                 timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"KBS URL {url!r} must be http:// or https://")
        self.url = url.rstrip("/")
        self.tee = tee
        self._evidence = evidence
        self._init_data = init_data_toml
        self._timeout = timeout
        self._ssl = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else None
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._token: str | None = None

    def _call(self, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[list[tuple[str, str]], bytes]:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        # The scheme is checked in __init__ (http/https only), hence the S310 waivers.
        req = urllib.request.Request(self.url + path, data=data, method=method,  # noqa: S310
                                     headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout, context=self._ssl) as r:  # noqa: S310
                out = r.read(MAX_RESPONSE_BYTES + 1)
                if len(out) > MAX_RESPONSE_BYTES:
                    raise WireFormatError(f"KBS {self.url} response exceeds {MAX_RESPONSE_BYTES} B")
                return list(r.headers.items()), out
        except urllib.error.HTTPError as e:
            detail = _detail(e.read(64 * 1024))
            msg = f"KBS {self.url} refused {method} {path}: {e.code} {detail}"
            if e.code in (401, 403):
                raise PolicyDenied(msg, status=e.code, detail=detail) from None
            if e.code == 404:
                raise NotFound(msg, detail=detail) from None
            if e.code >= 500:
                raise BrokerUnavailable(msg) from None
            raise ArcaError(msg, status=e.code) from None
        except (OSError, ValueError) as e:  # URLError, timeouts, TLS failures are OSErrors
            raise BrokerUnavailable(f"KBS {self.url} unreachable: {e}") from None

    def attest(self) -> str:
        """Run auth + attest with a fresh EC P-256 key; return the attestation token."""
        headers, body = self._call("POST", "/kbs/v0/auth", proto.Request(self.tee).to_json())
        challenge = proto.Challenge.from_json(proto.parse_json(body, "KBS challenge"))
        cookie = _session_cookie(headers)
        key = ec.generate_private_key(ec.SECP256R1())
        nums = key.public_key().public_numbers()
        runtime_data = {"nonce": challenge.nonce, "tee-pubkey": {
            "kty": "EC", "crv": "P-256", "alg": jwe.ALG,
            "x": jwe.b64u(nums.x.to_bytes(32, "big")), "y": jwe.b64u(nums.y.to_bytes(32, "big"))}}
        raw = self._evidence(proto.report_data(runtime_data))
        try:  # JSON evidence (sim, sample, CoCo-style) is embedded as a value, binary as a quote
            primary: Any = json.loads(raw)
        except ValueError:
            primary = {"quote": base64.b64encode(raw).decode()}
        init = None if self._init_data is None else proto.InitData("toml", self._init_data)
        att = proto.Attestation(runtime_data, primary, "", init)
        _, body = self._call("POST", "/kbs/v0/attest", att.to_json(),
                             {"Cookie": f"{proto.SESSION_COOKIE}={cookie}"})
        reply = proto.parse_json(body, "KBS attest response")
        if not isinstance(reply, dict) or not isinstance(reply.get("token"), str):
            raise WireFormatError("KBS attest response must be {\"token\": <JWT>}")
        self._key, self._token = key, reply["token"]
        return self._token

    def get_resource(self, path: str) -> bytes:
        """Fetch ``repo/type/tag``; return its decrypted plaintext (attesting first if needed)."""
        if not _PATH.fullmatch(path) or ".." in path.split("/"):
            raise ValueError(f"resource path {path!r} is not repo/type/tag")
        for attempt in (0, 1):
            if self._token is None or self._key is None:
                self.attest()
            assert self._token is not None and self._key is not None
            try:
                _, body = self._call("GET", f"/kbs/v0/resource/{path}",
                                     headers={"Authorization": f"Bearer {self._token}"})
            except PolicyDenied as e:  # an expired token earns one fresh attestation
                if attempt or e.fields.get("status") != 401:
                    raise
                self._token = None
                continue
            return jwe.decrypt(proto.parse_json(body, "KBS resource response"), self._key)
        raise AssertionError("unreachable")


def _session_cookie(headers: list[tuple[str, str]]) -> str:
    for name, value in headers:
        if name.lower() == "set-cookie":
            m = re.match(rf"\s*{proto.SESSION_COOKIE}=([A-Za-z0-9_.-]+)", value)
            if m:
                return m.group(1)
    raise WireFormatError(f"KBS auth response has no {proto.SESSION_COOKIE} cookie")


def _detail(body: bytes) -> str:
    try:
        problem = json.loads(body)
        return f"{problem.get('type', '').rsplit('/', 1)[-1]}: {problem.get('detail', '')}"
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")
