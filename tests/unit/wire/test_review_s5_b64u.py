"""Review (s5): ``b64u_decode`` is the one decoder of the guest's JWE, the broker's tee-pubkey
and JWT segments. RFC 7515 section 2 defines base64url *without* ``=`` and without other
characters; RFC 4648 section 3.5 lets decoders refuse non-zero pad bits, as Trustee's Rust
decoder does. Each byte string has exactly one accepted spelling, so an attacker cannot respell
a signature, a key or a JWE field (``AAAA====`` for ``AAAA``) and still be accepted."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.guest import jwe
from arca.kbs import tokens
from arca.kbs.jwe import TeeKeyError, tee_key
from arca.wire.errors import WireFormatError
from arca.wire.kbs_protocol import b64u, b64u_decode


@pytest.mark.parametrize("text", [
    "QQ==", "QQ=", "QUI=",  # padding, which RFC 7515 omits
    "QUJD====", "AAAA=", "AAAA====",  # padding after a whole quantum: junk base64 skipped
    "QR", "QUJ", "AB",  # non-zero pad bits: another spelling of b"A", b"AB", b"\0"
])
def test_b64u_decode_refuses_other_spellings(text: str) -> None:
    with pytest.raises(WireFormatError):
        b64u_decode(text, "x")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="AQRBCxyz019-_+/=. \n", max_size=16))
def test_b64u_decode_accepts_only_the_canonical_spelling(text: str) -> None:
    try:
        got = b64u_decode(text, "x")
    except WireFormatError:
        return
    assert b64u(got) == text


def test_a_respelled_token_signature_is_refused() -> None:
    signer = tokens.TokenSigner(tokens.TokenSigner.from_pem(
        tokens.TokenSigner.generate_pem()).key)
    token = signer.sign({"exp": 4_000_000_000})
    assert signer.verify(token)["exp"] == 4_000_000_000
    with pytest.raises(tokens.TokenError, match="base64url"):
        signer.verify(token + "==")


def test_a_respelled_admin_token_signature_is_refused() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tokens.load_admin_key(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    token = tokens.make_admin_token(key)
    assert tokens.verify_admin(token, pub)
    head, sig = token.rsplit(".", 1)
    # 64 bytes end in a 2-character quantum whose last character has 4 pad bits: set one.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    flipped = sig[:-1] + alphabet[alphabet.index(sig[-1]) ^ 1]
    for bad in (f"{token}=", f"{head}.{flipped}"):
        with pytest.raises(tokens.TokenError):
            tokens.verify_admin(bad, pub)


def test_a_respelled_tee_pubkey_is_refused() -> None:
    pub = jwe.public_jwk(jwe.generate_key())
    assert tee_key(pub)
    with pytest.raises(TeeKeyError, match="base64url"):
        tee_key({**pub, "x": pub["x"] + "="})


@pytest.mark.parametrize("field", ["iv", "tag", "encrypted_key", "ciphertext"])
def test_the_guest_refuses_a_respelled_jwe(field: str) -> None:
    from arca.kbs.service import encrypt_to

    key = jwe.generate_key()
    doc = encrypt_to(jwe.public_jwk(key), b"secret")
    assert jwe.decrypt(doc, key) == b"secret"
    value = doc[field]  # padded, or junk padding after a whole last quantum: the same bytes
    respelled = value + ("=" * (-len(value) % 4) if len(value) % 4 else "====")
    with pytest.raises(WireFormatError, match="base64url"):
        jwe.decrypt({**doc, field: respelled}, key)
