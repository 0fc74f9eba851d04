"""JWE encryption of released resources to the TEE's key (RFC 7516/7518), on ``cryptography``.

Two key-management algorithms, checked exactly: ``ECDH-ES+A256KW`` on X25519 (RFC 8037: what
Arca guests use) or P-256 (what Trustee's attestation agent uses), and ``RSA-OAEP-256`` with
RSA >= 2048 bits; the content
cipher is always ``A256GCM`` and every header is protected. The output is the flattened JSON
serialization with the ephemeral key inside the protected header (Trustee's layout), so AAD is
ASCII(protected). Decryption is the guest's job (``arca.guest.jwe``).

Built on the primitives directly rather than on jwcrypto: a release is on the hot path of every
session and jwcrypto's object model cost about four times the cryptography itself.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from arca.wire.errors import WireFormatError
from arca.wire.kbs_protocol import b64u, b64u_decode

EC_ALG = "ECDH-ES+A256KW"
RSA_ALG = "RSA-OAEP-256"
ENC = "A256GCM"
MIN_RSA_BITS = 2048
#: Largest RSA modulus accepted: bigger keys only cost the broker time.
MAX_RSA_BITS = 8192

TeeKey = ec.EllipticCurvePublicKey | x25519.X25519PublicKey | rsa.RSAPublicKey


class TeeKeyError(ValueError):
    """A ``tee-pubkey`` JWK is not acceptable; the message says why."""


def _b64u_decode(value: Any, what: str) -> bytes:
    try:
        return b64u_decode(value, what)
    except WireFormatError as e:
        raise TeeKeyError(str(e)) from None


#: For the low-order check of X25519 keys at ``attest``; a fixed key costs no key generation.
_PROBE = x25519.X25519PrivateKey.generate()


def tee_key(jwk: Any, *, probe: bool = True) -> tuple[TeeKey, str]:
    """The TEE's public key from its JWK and the key-management algorithm to encrypt to it.
    ``probe=False`` skips the trial key agreement that refuses low-order X25519 points: for
    keys checked before (in the token), whose real key agreement fails on them anyway."""
    if not isinstance(jwk, dict):
        raise TeeKeyError("tee-pubkey must be a JSON object")
    kty = jwk.get("kty")
    if kty == "EC":
        alg = jwk.get("alg", EC_ALG)
        if jwk.get("crv") != "P-256" or alg != EC_ALG:
            raise TeeKeyError(f"EC tee-pubkey must be P-256 with alg {EC_ALG}")
        x, y = _b64u_decode(jwk.get("x"), "x"), _b64u_decode(jwk.get("y"), "y")
        if len(x) != 32 or len(y) != 32:
            raise TeeKeyError("EC coordinates must be 32 bytes")
        try:  # refuses points off P-256 (invalid-curve attacks)
            return ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b"\x04" + x + y), alg
        except ValueError:
            raise TeeKeyError("EC tee-pubkey is not a point on P-256") from None
    if kty == "OKP":
        if jwk.get("crv") != "X25519" or jwk.get("alg", EC_ALG) != EC_ALG:
            raise TeeKeyError(f"OKP tee-pubkey must be X25519 with alg {EC_ALG}")
        x = _b64u_decode(jwk.get("x"), "x")
        if len(x) != 32:
            raise TeeKeyError("X25519 tee-pubkey must be 32 bytes")
        key = x25519.X25519PublicKey.from_public_bytes(x)
        if probe:
            _exchange_x25519(_PROBE, key)
        return key, EC_ALG
    if kty == "RSA":
        alg = jwk.get("alg", RSA_ALG)
        if alg != RSA_ALG:
            raise TeeKeyError(f"RSA tee-pubkey must use alg {RSA_ALG}")
        n = int.from_bytes(_b64u_decode(jwk.get("n"), "n"), "big")
        e = int.from_bytes(_b64u_decode(jwk.get("e"), "e"), "big")
        if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
            raise TeeKeyError(f"RSA tee-pubkey must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key(), alg
        except ValueError as err:
            raise TeeKeyError(f"RSA tee-pubkey is invalid: {err}") from None
    raise TeeKeyError("tee-pubkey kty must be OKP, EC or RSA")


def _exchange_x25519(ours: x25519.X25519PrivateKey, peer: x25519.X25519PublicKey) -> bytes:
    try:  # OpenSSL refuses low-order points: the shared secret would be all zeros (RFC 7748 6.1)
        return ours.exchange(peer)
    except ValueError:
        raise TeeKeyError("X25519 tee-pubkey is a low-order point") from None


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _ecdh_kek(peer: ec.EllipticCurvePublicKey | x25519.X25519PublicKey
              ) -> tuple[bytes, dict[str, str]]:
    """RFC 7518 section 4.6 (RFC 8037 for X25519): fresh ephemeral key on the peer's curve,
    ECDH, Concat KDF (empty apu/apv)."""
    if isinstance(peer, x25519.X25519PublicKey):
        eph_x = x25519.X25519PrivateKey.generate()
        z = _exchange_x25519(eph_x, peer)
        epk = {"kty": "OKP", "crv": "X25519", "x": b64u(eph_x.public_key().public_bytes_raw())}
    else:
        eph = ec.generate_private_key(ec.SECP256R1())
        z = eph.exchange(ec.ECDH(), peer)
        nums = eph.public_key().public_numbers()
        epk = {"kty": "EC", "crv": "P-256", "x": b64u(nums.x.to_bytes(32, "big")),
               "y": b64u(nums.y.to_bytes(32, "big"))}
    other = _lp(EC_ALG.encode()) + _lp(b"") + _lp(b"") + struct.pack(">I", 256)
    return ConcatKDFHash(hashes.SHA256(), 32, other).derive(z), epk


def encrypt_to(jwk: Any, plaintext: bytes) -> dict[str, str]:
    """Flattened JWE of ``plaintext`` to the TEE key, ``A256GCM``, all headers protected."""
    key, alg = tee_key(jwk, probe=False)  # the real key agreement refuses low-order points
    cek = AESGCM.generate_key(256)
    header: dict[str, Any] = {"alg": alg, "enc": ENC}
    if isinstance(key, ec.EllipticCurvePublicKey | x25519.X25519PublicKey):
        kek, header["epk"] = _ecdh_kek(key)
        encrypted_key = aes_key_wrap(kek, cek)
    else:
        encrypted_key = key.encrypt(cek, padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    protected = b64u(json.dumps(header, separators=(",", ":")).encode())
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode())
    return {"protected": protected, "encrypted_key": b64u(encrypted_key), "iv": b64u(iv),
            "ciphertext": b64u(sealed[:-16]), "tag": b64u(sealed[-16:])}
