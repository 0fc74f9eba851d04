"""Session cookies and the session state machine; JWK acceptance; fuzzing of both parsers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.kbs.problems import KbsProblem
from arca.kbs.service import _tee_key, encrypt_to
from arca.kbs.sessions import SessionCodec, State, cookie_key, state_of

CODEC = SessionCodec(cookie_key(b"k" * 32))


def test_cookie_roundtrip_and_forgery():
    cookie, c = CODEC.issue("sim", "nonce", 300)
    assert CODEC.open(cookie) == c
    assert state_of(c, None) is State.CHALLENGED
    payload, mac = cookie.split(".")
    assert CODEC.open(f"{payload}x.{mac}") is None
    assert CODEC.open(f"{payload}.{mac[:-2]}AA") is None
    assert SessionCodec(cookie_key(b"o" * 32)).open(cookie) is None  # another KEK
    assert CODEC.open(None) is None and CODEC.open("") is None


def test_state_machine():
    _, c = CODEC.issue("sim", "n", 10)
    now = c.expires_at - 5
    assert state_of(c, None, now) is State.CHALLENGED
    assert state_of(c, None, c.expires_at + 1) is State.EXPIRED
    assert state_of(c, now + 100, now) is State.ATTESTED
    assert state_of(c, now - 1, now) is State.EXPIRED
    assert state_of(None, now + 100, now) is State.EXPIRED


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_open_never_crashes(text):
    assert CODEC.open(text) is None or isinstance(CODEC.open(text).sid, str)


EC = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
      "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}


@pytest.mark.parametrize("jwk", [
    {**EC, "crv": "P-384"}, {**EC, "alg": "ECDH-ES"}, {**EC, "x": "AAAA"},
    {**EC, "y": EC["x"]},  # not on the curve
    {"kty": "oct", "k": "AAAA"}, {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
    {"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RSA1_5"}, {},
])
def test_bad_tee_keys_refused(jwk):
    with pytest.raises(KbsProblem) as e:
        _tee_key(jwk)
    assert e.value.status == 400


def test_good_tee_key():
    key, alg = _tee_key({**EC, "alg": "ECDH-ES+A256KW"})
    assert alg == "ECDH-ES+A256KW"
    assert set(encrypt_to(EC, b"x")) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "n", "e", "alg", "d"]),
                       st.sampled_from(["EC", "RSA", "P-256", "AQAB", "", "ECDH-ES+A256KW"])
                       | st.text(max_size=50), max_size=6))
def test_tee_key_never_crashes(jwk):
    try:
        _tee_key(jwk)
    except KbsProblem as e:
        assert e.status == 400
    assert json.dumps(jwk)
