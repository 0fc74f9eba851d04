"""KBS protocol messages (arca.wire.kbs_protocol) and the guest's JWE decryption: exact shapes,
refusals, and property tests that no input makes the parsers fail other than by their error."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk

from arca.guest import jwe
from arca.kbs import protocol as kproto
from arca.kbs.service import encrypt_to
from arca.wire import kbs_protocol as proto
from arca.wire import tees
from arca.wire.errors import WireFormatError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def test_request_roundtrip_and_shape():
    req = proto.Request("sim")
    assert req.to_json() == {"version": "0.4.0", "tee": "sim", "extra-params": {}}
    assert kproto.parse_request(req.to_json()) == req
    assert kproto.parse_request({"version": "0.4.0", "tee": "tdx", "extra-params": ""}).tee


@pytest.mark.parametrize("value", [
    {"version": "0.4.0"}, {"tee": "sim"}, {"version": 4, "tee": "sim"},
    {"version": "0.4.0", "tee": "sim", "x": 1}, {"version": "0.4.0", "tee": "sim",
                                                 "extra-params": 3}, [], "s", None])
def test_request_refusals(value):
    with pytest.raises(WireFormatError):
        kproto.parse_request(value)


def test_attestation_roundtrip():
    att = proto.Attestation({"nonce": "n", "tee-pubkey": {"kty": "EC"}}, {"a": 1}, "",
                            proto.InitData("toml", "algorithm = 'sha256'\n"))
    doc = att.to_json()
    assert set(doc) == {"runtime-data", "tee-evidence", "init-data"}
    assert doc["tee-evidence"] == {"primary_evidence": {"a": 1}, "additional_evidence": ""}
    assert kproto.parse_attestation(doc) == att
    with pytest.raises(WireFormatError, match="unknown"):
        kproto.parse_attestation({**doc, "runtime-data": {**doc["runtime-data"], "x": 1}})
    with pytest.raises(WireFormatError, match="format"):
        kproto.parse_attestation({**doc, "init-data": {"format": "json", "body": "{}"}})


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_parsers_never_crash(value):
    for parse in (kproto.parse_request, proto.Challenge.from_json,
                  kproto.parse_attestation, kproto.parse_init_data):
        try:
            parse(value)
        except WireFormatError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parse_json_bytes(data):
    try:
        proto.parse_json(data, "x")
    except WireFormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), JSON, max_size=5), st.text(max_size=30))
def test_report_data_matches_rfc8785(extra, nonce):
    rd = {"nonce": nonce, "tee-pubkey": extra}
    want = hashlib.sha384(rfc8785.dumps(rd)).digest() + bytes(16)
    assert proto.report_data(rd, "sim") == want


@pytest.mark.parametrize("alg,fn", [("sha256", hashlib.sha256), ("sha-384", hashlib.sha384),
                                    ("sha512", hashlib.sha512), (None, hashlib.sha384)])
def test_init_data_digest(alg, fn):
    body = (f'algorithm = "{alg}"\n' if alg else "") + 'version = "0.1.0"\n'
    assert kproto.init_data_digest(body) == fn(body.encode()).digest()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_init_data_digest_never_crashes(text):
    try:
        kproto.init_data_digest(text)
    except WireFormatError:
        pass
    with pytest.raises(WireFormatError):
        kproto.init_data_digest('algorithm = "md5"\n')


def test_pad():  # report data is padded by the table's rule (arca.wire.tees.Tee.report_data)
    assert tees.get("tdx").report_data(b"\1" * 48) == b"\1" * 48 + bytes(16)
    with pytest.raises(ValueError):
        tees.get("tdx").report_data(b"\1" * 65)


# -- JWE -----------------------------------------------------------------------------------
@pytest.fixture(params=["X25519", "P-256"])
def curve(request):
    return request.param


def _keys(curve="X25519"):
    priv = jwe.generate_key(curve)
    return priv, jwe.public_jwk(priv)


def test_decrypt_kbs_jwe(curve):
    priv, pub = _keys(curve)
    assert jwe.decrypt(encrypt_to(pub, b"secret"), priv) == b"secret"
    assert jwe.decrypt(encrypt_to(pub, b""), priv) == b""


def test_decrypt_jwcrypto_flattened_with_protected_epk(curve):
    """An independent producer: jwcrypto's own compact form converted to flattened JSON."""
    priv, pub = _keys(curve)
    obj = jwcrypto_jwe.JWE(b"x" * 1000, protected=json.dumps(
        {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "apu": "QWxpY2U", "apv": "Qm9i"}))
    obj.add_recipient(jwk.JWK(**pub))
    parts = obj.serialize(compact=True).split(".")
    doc = dict(zip(("protected", "encrypted_key", "iv", "ciphertext", "tag"), parts))
    assert jwe.decrypt(doc, priv) == b"x" * 1000


def _flip(text):
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[0] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("field", ["ciphertext", "tag", "iv", "encrypted_key", "protected"])
def test_decrypt_tampered(field, curve):
    priv, pub = _keys(curve)
    doc = encrypt_to(pub, b"secret")
    doc[field] = _flip(doc[field])
    with pytest.raises(WireFormatError):
        jwe.decrypt(doc, priv)


def test_decrypt_refusals(curve):
    priv, pub = _keys(curve)
    other, _ = _keys(curve)
    doc = encrypt_to(pub, b"secret")
    with pytest.raises(WireFormatError, match="not ours"):
        jwe.decrypt(doc, other)
    with pytest.raises(WireFormatError, match="epk must be"):  # the other curve's key
        jwe.decrypt(doc, _keys("P-256" if curve == "X25519" else "X25519")[0])
    with pytest.raises(WireFormatError):
        jwe.decrypt({**doc, "extra": "1"}, priv)
    header = json.loads(base64.urlsafe_b64decode(doc["protected"] + "=="))
    epk = header["epk"]
    bad_points = ([{**epk, "x": jwe.b64u(bytes(32))},  # low order (RFC 7748 section 6.1)
                   {**epk, "x": jwe.b64u((1).to_bytes(32, "little"))}] if curve == "X25519"
                  else [{**epk, "x": epk["y"]}, {**epk, "y": jwe.b64u(bytes(32))}])  # off curve
    for change in ({"alg": "ECDH-ES"}, {"enc": "A128GCM"}, {"zip": "DEF"},
                   *({"epk": e} for e in bad_points),
                   {"epk": {**epk, "x": jwe.b64u(bytes(31))}},
                   {"epk": {**epk, "crv": "X448" if curve == "X25519" else "P-384"}}):
        bad = jwe.b64u(json.dumps({**header, **change}).encode())
        with pytest.raises(WireFormatError):
            jwe.decrypt({**doc, "protected": bad}, priv)
    with pytest.raises(ValueError, match="neither"):
        jwe.generate_key("P-384")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["protected", "encrypted_key", "iv", "ciphertext", "tag",
                                        "aad", "x"]), st.text(max_size=40) | JSON, max_size=7))
def test_decrypt_never_crashes(doc):
    for priv, _ in KEYS:
        try:
            jwe.decrypt(doc, priv)
        except WireFormatError:
            pass


KEYS = (_keys("X25519"), _keys("P-256"))


# -- X25519 key, base64url ------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_b64u_matches_base64_and_round_trips(data):
    assert jwe.b64u(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert jwe.b64u_decode(jwe.b64u(data), "x") == data


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ABCxyz019-_+/=. \n\u00e9", max_size=24))
def test_b64u_decode_is_strict_base64url(text):
    """Whatever it accepts, base64's own decoder reads the same; it never accepts the standard
    alphabet's ``+``/``/``, whitespace or other characters (base64 would silently skip them)."""
    try:
        got = jwe.b64u_decode(text, "x")
    except WireFormatError:
        return
    assert set(text) <= set("ABCxyz019-_=")
    assert got == base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_the_guest_key_is_x25519_and_its_jwk_says_so():
    from cryptography.hazmat.primitives.asymmetric import x25519

    priv = jwe.generate_key()
    pub = jwe.public_jwk(priv)
    assert set(pub) == {"kty", "crv", "alg", "x"} and pub["kty"] == "OKP"
    assert pub["crv"] == "X25519" and pub["alg"] == "ECDH-ES+A256KW"
    assert x25519.X25519PublicKey.from_public_bytes(jwe.b64u_decode(pub["x"], "x")) \
        == priv.public_key()
    assert jwe.public_jwk(jwe.generate_key())["x"] != pub["x"]  # fresh per call


@pytest.mark.parametrize(("change", "reason"), [
    ({"x": jwe.b64u(bytes(32))}, "low-order"),  # RFC 7748 section 6.1: all-zero secret
    ({"x": jwe.b64u((1).to_bytes(32, "little"))}, "low-order"),
    ({"x": jwe.b64u(bytes(31))}, "32 bytes"),
    ({"x": 7}, "base64url"),
    ({"crv": "X448"}, "X25519"),
    ({"alg": "ECDH-ES"}, "X25519 with alg"),
])
def test_the_broker_refuses_bad_x25519_keys(change, reason):
    from arca.kbs.jwe import TeeKeyError, tee_key

    pub = {**jwe.public_jwk(jwe.generate_key()), **change}
    with pytest.raises(TeeKeyError, match=reason):
        tee_key(pub)
    from arca.kbs.problems import KbsProblem

    with pytest.raises(KbsProblem, match=reason):  # at release too (no trial there)
        encrypt_to(pub, b"secret")


def test_a_deeply_nested_jwe_header_is_a_clean_jwe_error():
    priv, pub = _keys()
    doc = encrypt_to(pub, b"secret")
    deep = jwe.b64u(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(WireFormatError, match="JWE protected header is not JSON"):
        jwe.decrypt({**doc, "protected": deep}, priv)
