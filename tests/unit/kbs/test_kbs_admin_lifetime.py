"""Admin tokens have a bounded lifetime: attacks with odd or far-away times are refused.

A stolen admin token must not be usable for ever: ``exp`` must be a finite number at most
``admin_token_max_lifetime`` (default one hour) ahead; ``iat``/``nbf`` must be finite and not in
the future beyond the clock skew. Python's ``json`` reads ``NaN``/``Infinity``, which compare
false to everything, so they are the classic way past a naive ``exp <= now`` check.
"""

from __future__ import annotations

import pathlib
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.kbs.config import KbsConfig
from arca.kbs.problems import KbsProblem
from arca.kbs.service import KbsService
from arca.kbs.tokens import (
    CLOCK_SKEW,
    DEFAULT_ADMIN_TOKEN_MAX_LIFETIME,
    TokenError,
    b64u,
    make_admin_token,
    verify_admin,
)

KEY = ed25519.Ed25519PrivateKey.generate()
NOW = 1_800_000_000.0
HEADER = b'{"alg":"EdDSA","typ":"JWT"}'


def _token(claims_json: str, key: ed25519.Ed25519PrivateKey = KEY) -> str:
    """An EdDSA token over claims given as raw JSON text (so NaN and friends can be sent)."""
    signing_input = f"{b64u(HEADER)}.{b64u(claims_json.encode())}"
    return f"{signing_input}.{b64u(key.sign(signing_input.encode()))}"


def _verify(claims_json: str, **kw: float) -> dict[str, object]:
    return verify_admin(_token(claims_json), KEY.public_key(), now=NOW, **kw)


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity", "1e400", '"1900000000"',
                                 "null", "true", "[1900000000]", "{}"])
def test_exp_that_is_not_a_finite_number_is_refused(exp):
    with pytest.raises(TokenError, match="exp"):
        _verify(f'{{"iat": {int(NOW)}, "exp": {exp}}}')


def test_missing_exp_is_refused():
    with pytest.raises(TokenError, match="exp"):
        _verify(f'{{"iat": {int(NOW)}}}')


@pytest.mark.parametrize("exp", [NOW + DEFAULT_ADMIN_TOKEN_MAX_LIFETIME + 1, NOW + 86400 * 3650,
                                 10 ** 400, 2.0 ** 1000])
def test_exp_beyond_the_max_lifetime_is_refused(exp):
    with pytest.raises(TokenError, match="longest accepted lifetime"):
        _verify(f'{{"exp": {exp!r}}}')


def test_max_lifetime_is_configurable_and_inclusive():
    claims = f'{{"exp": {NOW + 600!r}}}'
    assert _verify(claims)["exp"] == NOW + 600
    with pytest.raises(TokenError, match="more than 300 s"):
        _verify(claims, max_lifetime=300)
    assert _verify(f'{{"exp": {NOW + 3600!r}}}')  # exactly the maximum is fine


@pytest.mark.parametrize("name", ["iat", "nbf"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", '"0"', "true",
                                   repr(NOW + CLOCK_SKEW + 5)])
def test_iat_nbf_odd_or_in_the_future_are_refused(name, value):
    with pytest.raises(TokenError, match=name):
        _verify(f'{{"exp": {NOW + 60!r}, "{name}": {value}}}')


def test_iat_within_the_skew_is_accepted():
    assert _verify(f'{{"exp": {NOW + 60!r}, "iat": {NOW + CLOCK_SKEW - 1!r}}}')


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                 st.text(max_size=20), st.none(), st.booleans()))
def test_no_exp_value_gives_more_than_the_max_lifetime(exp):
    import json

    try:
        claims = _verify(json.dumps({"exp": exp}))
    except TokenError:
        return
    assert NOW < claims["exp"] <= NOW + DEFAULT_ADMIN_TOKEN_MAX_LIFETIME  # type: ignore[operator]


def test_service_applies_the_configured_max_lifetime(tmp_path: pathlib.Path):
    pub = tmp_path / "admin.pub"
    pub.write_bytes(KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    svc = KbsService(KbsConfig(data_dir=str(tmp_path), admin_public_key=str(pub),
                               insecure_http=True, admin_token_max_lifetime=120))
    try:
        svc.check_admin(make_admin_token(KEY, lifetime=60))
        for bad in (make_admin_token(KEY, lifetime=600),
                    _token(f'{{"exp": NaN, "iat": {int(time.time())}}}'),
                    _token('{"exp": Infinity}')):
            with pytest.raises(KbsProblem) as info:
                svc.check_admin(bad)
            assert info.value.name == "AdminAuth" and info.value.status == 401
    finally:
        svc.close()
