"""Decrypt KBS resource responses: flattened JWE, ``ECDH-ES+A256KW`` / ``A256GCM`` (RFC 7516/8).

Only what the guest needs: one key-agreement algorithm on P-256 and one content cipher, both
checked exactly; anything else is refused. Encryption is the broker's job (``arca.kbs``).
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from arca.wire.errors import WireFormatError
from arca.wire.kbs_protocol import ALG as ALG  # re-exported
from arca.wire.kbs_protocol import b64u as b64u
from arca.wire.lean import json_loads

ENC = "A256GCM"
_FIELDS = {"protected", "encrypted_key", "iv", "ciphertext", "tag"}


def b64u_decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise WireFormatError(f"JWE {what} must be a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise WireFormatError(f"JWE {what} is not base64url") from None


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _kek(key: ec.EllipticCurvePrivateKey, header: dict[str, Any]) -> bytes:
    """RFC 7518 section 4.6.2: ECDH-ES shared secret, then Concat KDF for a 256-bit KEK."""
    epk = header.get("epk")
    if not isinstance(epk, dict) or epk.get("kty") != "EC" or epk.get("crv") != "P-256":
        raise WireFormatError("JWE epk must be an EC P-256 public key")
    x, y = b64u_decode(epk.get("x"), "epk.x"), b64u_decode(epk.get("y"), "epk.y")
    if len(x) != 32 or len(y) != 32:
        raise WireFormatError("JWE epk coordinates must be 32 bytes")
    try:  # the point is checked to lie on the curve, blocking invalid-curve attacks
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    except ValueError:
        raise WireFormatError("JWE epk is not a point on P-256") from None
    z = key.exchange(ec.ECDH(), peer)
    other = (_lp(ALG.encode()) + _lp(b64u_decode(header.get("apu", ""), "apu"))
             + _lp(b64u_decode(header.get("apv", ""), "apv")) + struct.pack(">I", 256))
    return ConcatKDFHash(hashes.SHA256(), 32, other).derive(z)


def decrypt(jwe: Any, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Decrypt a flattened JWE (parsed JSON object) addressed to ``key``."""
    if not isinstance(jwe, dict) or not _FIELDS <= set(jwe) or set(jwe) - _FIELDS - {"aad"}:
        raise WireFormatError(f"JWE must have exactly {sorted(_FIELDS)} (and optionally aad)")
    protected_b64 = jwe["protected"]
    try:
        header = json_loads(b64u_decode(protected_b64, "protected"))
    except ValueError:
        raise WireFormatError("JWE protected header is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != ALG or header.get("enc") != ENC:
        raise WireFormatError(f"JWE must use alg {ALG} and enc {ENC}")
    if "zip" in header or "crit" in header:
        raise WireFormatError("JWE zip/crit headers are not supported")
    aad = protected_b64.encode()
    if "aad" in jwe:
        aad += b"." + str(jwe["aad"]).encode()
    iv, tag = b64u_decode(jwe["iv"], "iv"), b64u_decode(jwe["tag"], "tag")
    if len(iv) != 12 or len(tag) != 16:
        raise WireFormatError("JWE iv must be 12 bytes and tag 16 bytes for A256GCM")
    try:
        cek = aes_key_unwrap(_kek(key, header), b64u_decode(jwe["encrypted_key"], "key"))
        if len(cek) != 32:
            raise WireFormatError("JWE content key must be 256 bits")
        return AESGCM(cek).decrypt(iv, b64u_decode(jwe["ciphertext"], "ciphertext") + tag, aad)
    except (InvalidUnwrap, InvalidTag):
        raise WireFormatError("JWE does not decrypt with this key (tampered or not ours)") from None
