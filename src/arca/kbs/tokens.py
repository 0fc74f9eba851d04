"""JWTs of the KBS: EAR attestation tokens it signs (ES256) and admin tokens it checks (EdDSA).

The token key is an EC P-256 key kept (sealed) in the database, so it survives restarts and is
shared by replicas. Its public JWK is served at ``/.well-known/kbs-token-jwks.json`` with a
``kid`` (RFC 7638 thumbprint). Verification is exact: algorithm pinned per token kind, signature
checked before any claim is read, ``exp`` mandatory.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from arca.wire import kbs_protocol
from arca.wire.errors import WireFormatError
from arca.wire.kbs_protocol import b64u as b64u  # re-exported

#: Largest JWT accepted in a header: a token carries claims, not payloads.
MAX_TOKEN_CHARS = 32 * 1024
#: Tolerated clock skew for ``iat``/``nbf`` of admin tokens.
CLOCK_SKEW = 60
#: Default longest lifetime of an admin token: its ``exp`` may lie at most this far ahead, so
#: a leaked token is worth two hours at most (``admin_token_max_lifetime`` in the config). Two
#: hours is what Trustee's ``kbs-client`` minted (``ADMIN_TOKEN_EXPIRY_SECS`` in
#: ``tools/kbs-client/src/lib.rs``) and what Trustee's integration tests still mint
#: (``integration-tests/src/common.rs``), so their tokens work with the defaults.
DEFAULT_ADMIN_TOKEN_MAX_LIFETIME = 7200


class TokenError(Exception):
    """A JWT failed verification; the message says which check."""


def b64u_decode(text: str) -> bytes:
    try:
        return kbs_protocol.b64u_decode(text, "JWT segment")
    except WireFormatError as e:
        raise TokenError(str(e)) from None


def _json_b64(obj: Any) -> str:
    return b64u(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signing input and signature of a compact JWS; nothing verified yet."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"JWT longer than {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("JWT must have three dot-separated parts")
    try:
        header, claims = json.loads(b64u_decode(parts[0])), json.loads(b64u_decode(parts[1]))
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        raise TokenError("JWT header or claims are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("JWT header and claims must be JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), b64u_decode(parts[2])


def _finite_time(value: Any) -> TypeGuard[float]:
    """A JSON number usable as a time: ``int`` or finite ``float`` (not bool, NaN, Infinity;
    Python's ``json`` accepts ``NaN`` and ``Infinity``, which compare false to everything)."""
    if type(value) is int:
        return True
    return type(value) is float and math.isfinite(value)


def _check_times(claims: dict[str, Any], now: float, max_lifetime: float | None = None) -> None:
    exp = claims.get("exp")
    if not _finite_time(exp):
        raise TokenError("JWT has no finite numeric exp claim")
    if exp <= now:
        raise TokenError("JWT has expired")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is not None and (not _finite_time(value) or value > now + CLOCK_SKEW):
            raise TokenError(f"JWT {name} is not a time in the past")
    if max_lifetime is not None and exp > now + max_lifetime:
        raise TokenError(f"JWT exp lies more than {max_lifetime:g} s in the future "
                         "(longer than the longest accepted lifetime)")


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    nums = key.public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": b64u(nums.x.to_bytes(32, "big")),
           "y": b64u(nums.y.to_bytes(32, "big"))}
    thumb = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode())
    return {**jwk, "alg": "ES256", "use": "sig", "kid": b64u(thumb.digest())}


@dataclass
class TokenSigner:
    """Signs and verifies EAR tokens with the KBS's ES256 key."""

    key: ec.EllipticCurvePrivateKey

    @classmethod
    def from_pem(cls, pem: bytes) -> TokenSigner:
        key = serialization.load_pem_private_key(pem, None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("token key must be an EC key")
        return cls(key)

    @staticmethod
    def generate_pem() -> bytes:
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())

    def __post_init__(self) -> None:
        self._jwk = public_jwk(self.key.public_key())
        self._header = _json_b64({"alg": "ES256", "typ": "JWT", "kid": self._jwk["kid"]})

    @property
    def jwk(self) -> dict[str, str]:
        return dict(self._jwk)

    def sign(self, claims: dict[str, Any]) -> str:
        signing_input = f"{self._header}.{_json_b64(claims)}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(),
                                                  ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def verify(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        header, claims, signing_input, sig = split(token)
        if header.get("alg") != "ES256":
            raise TokenError("attestation token must be ES256")
        if len(sig) != 64:
            raise TokenError("ES256 signature must be 64 bytes")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        try:
            self.key.public_key().verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise TokenError("attestation token signature is not from this KBS") from None
        _check_times(claims, time.time() if now is None else now)
        return claims


def load_admin_key(pem: bytes) -> ed25519.Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("admin public key must be Ed25519 (EdDSA)")
    return key


def verify_admin(token: str, key: ed25519.Ed25519PublicKey, *, now: float | None = None,
                 max_lifetime: float = DEFAULT_ADMIN_TOKEN_MAX_LIFETIME) -> dict[str, Any]:
    """The claims of an admin token: EdDSA signature by ``key``, then ``exp`` finite, in the
    future and at most ``max_lifetime`` ahead; ``iat``/``nbf`` (optional) finite and not in
    the future beyond :data:`CLOCK_SKEW`."""
    header, claims, signing_input, sig = split(token)
    if header.get("alg") != "EdDSA":
        raise TokenError("admin token must be EdDSA")
    try:
        key.verify(sig, signing_input)
    except InvalidSignature:
        raise TokenError("admin token signature does not verify with the admin key") from None
    _check_times(claims, time.time() if now is None else now, max_lifetime)
    return claims


def make_admin_token(key: ed25519.Ed25519PrivateKey, *, lifetime: int = 300,
                     now: float | None = None) -> str:
    """An admin token for the CLI: EdDSA, ``iat`` now, ``exp`` after ``lifetime`` seconds
    (made by the admin client, which must not import this module: see its docstring)."""
    from arca.kbs.admin_client import admin_token

    return admin_token(key, lifetime, now)
