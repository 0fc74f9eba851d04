"""The guest's fresh key, X25519 (RFC 8037) or P-256, and decryption of KBS resource responses to
it: flattened JWE, ``ECDH-ES+A256KW`` / ``A256GCM`` only, checked exactly (RFC 7516/8)."""

from __future__ import annotations

import hashlib
import json

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from arca.wire.errors import WireFormatError
from arca.wire.kbs_protocol import ALG, b64u, b64u_decode  # also re-exported, for tests

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Key = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey

ENC = "A256GCM"
_FIELDS = {"protected", "encrypted_key", "iv", "ciphertext", "tag"}


def generate_key(curve: str = "X25519") -> Key:
    if curve == "X25519":
        return x25519.X25519PrivateKey.generate()
    if curve != "P-256":
        raise ValueError(f"tee key curve {curve!r} is neither X25519 nor P-256")
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: Key) -> dict[str, str]:
    pub = key.public_key()
    if hasattr(pub, "public_numbers"):
        n = pub.public_numbers()
        return {"kty": "EC", "crv": "P-256", "alg": ALG, "x": b64u(n.x.to_bytes(32, "big")),
                "y": b64u(n.y.to_bytes(32, "big"))}
    return {"kty": "OKP", "crv": "X25519", "alg": ALG, "x": b64u(pub.public_bytes_raw())}


def _kek(key: Key, header: dict[str, Any]) -> bytes:
    """RFC 7518 section 4.6.2: ECDH-ES shared secret, then Concat KDF (one SHA-256 round)."""
    epk, ours = header.get("epk"), public_jwk(key)
    if not isinstance(epk, dict) or (epk.get("kty"), epk.get("crv")) != (ours["kty"], ours["crv"]):
        raise WireFormatError(f"JWE epk must be a {ours['kty']} {ours['crv']} public key")
    x = b64u_decode(epk.get("x"), "JWE epk.x")
    y = b64u_decode(epk.get("y"), "JWE epk.y") if ours["kty"] == "EC" else x
    if len(x) != 32 or len(y) != 32:
        raise WireFormatError("JWE epk coordinates must be 32 bytes")
    try:  # off-curve points (invalid-curve attacks) and low-order X25519 points are refused
        if ours["kty"] == "OKP":
            z = key.exchange(x25519.X25519PublicKey.from_public_bytes(x))  # type: ignore[arg-type,call-arg]
        else:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\4" + x + y)
            z = key.exchange(ec.ECDH(), peer)  # type: ignore[arg-type,call-arg]
    except ValueError:
        raise WireFormatError(f"JWE epk is not a valid {ours['crv']} public key") from None
    other = b"".join(len(f).to_bytes(4, "big") + f for f in (
        ALG.encode(), b64u_decode(header.get("apu", ""), "JWE apu"),
        b64u_decode(header.get("apv", ""), "JWE apv")))
    return hashlib.sha256(b"\0\0\0\1" + z + other + (256).to_bytes(4, "big")).digest()


def decrypt(jwe: Any, key: Key) -> bytes:
    """Decrypt a flattened JWE (parsed JSON object) addressed to ``key``."""
    if not isinstance(jwe, dict) or not _FIELDS <= set(jwe) or set(jwe) - _FIELDS - {"aad"}:
        raise WireFormatError(f"JWE must have exactly {sorted(_FIELDS)} (and optionally aad)")
    protected_b64 = jwe["protected"]
    try:
        header = json.loads(b64u_decode(protected_b64, "JWE protected"))
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise WireFormatError("JWE protected header is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != ALG or header.get("enc") != ENC:
        raise WireFormatError(f"JWE must use alg {ALG} and enc {ENC}")
    if "zip" in header or "crit" in header:
        raise WireFormatError("JWE zip/crit headers are not supported")
    aad = protected_b64.encode()
    if "aad" in jwe:
        aad += b"." + str(jwe["aad"]).encode()
    iv, tag = b64u_decode(jwe["iv"], "JWE iv"), b64u_decode(jwe["tag"], "JWE tag")
    if len(iv) != 12 or len(tag) != 16:
        raise WireFormatError("JWE iv must be 12 bytes and tag 16 bytes for A256GCM")
    kek, wrapped = _kek(key, header), b64u_decode(jwe["encrypted_key"], "JWE key")
    if len(wrapped) != 40:  # RFC 3394: a wrapped 256-bit key
        raise WireFormatError("JWE content key must be 256 bits")
    ct = b64u_decode(jwe["ciphertext"], "JWE ciphertext")
    try:
        return AESGCM(aes_key_unwrap(kek, wrapped)).decrypt(iv, ct + tag, aad)
    except (InvalidUnwrap, InvalidTag):
        raise WireFormatError("JWE does not decrypt with this key (tampered or not ours)") from None
