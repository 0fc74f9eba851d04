"""The KBS's hot-path shortcuts give the same answers as the long way round:

* the JWE built on ``cryptography`` decrypts with jwcrypto (an independent implementation);
* Rego input built in memory evaluates like the JSON term, for any JSON input;
* a release served from the per-process attested-session cache obeys the same expiry, and
  another process (cache miss) still serves it from the database;
* the pure-ASGI protocol path answers like the FastAPI routes (cookies, problems, limits) and
  leaves admin and Bearer requests to FastAPI.
"""

from __future__ import annotations

import json
import pathlib
import re
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk
from starlette.testclient import TestClient

from arca.guest import jwe
from arca.kbs import policy as policy_module
from arca.kbs.app import MAX_ATTEST_BYTES, create_app
from arca.kbs.config import KbsConfig
from arca.kbs.policy import PolicyEngine
from arca.kbs.problems import KbsProblem
from arca.kbs.service import KbsService, _tee_key, encrypt_to
from arca.kbs.tokens import make_admin_token
from arca.wire import kbs_protocol as proto
from tests.support.kbs import SimAuthority, admin_keypair

PROBLEM = "https://github.com/confidential-containers/kbs/errors/"


def _b64u_int(n: int, size: int) -> str:
    return jwe.b64u(n.to_bytes(size, "big"))


def _guest_pair() -> tuple[Any, dict[str, str]]:
    """The key a guest makes (X25519)."""
    priv = jwe.generate_key()
    return priv, jwe.public_jwk(priv)


def _ec_pair() -> tuple[ec.EllipticCurvePrivateKey, dict[str, str]]:
    """The key Trustee's attestation agent makes (P-256)."""
    priv = ec.generate_private_key(ec.SECP256R1())
    n = priv.public_key().public_numbers()
    return priv, {"kty": "EC", "crv": "P-256", "alg": jwe.ALG,
                  "x": _b64u_int(n.x, 32), "y": _b64u_int(n.y, 32)}


def _jwcrypto_decrypt(doc: dict[str, str], priv: object) -> bytes:
    pem = priv.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                             serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    obj = jwcrypto_jwe.JWE()
    obj.deserialize(json.dumps(doc), jwk.JWK.from_pem(pem))
    return bytes(obj.payload)


@pytest.mark.parametrize("plaintext", [b"", b"s", b"x" * 5000])
def test_x25519_jwe_decrypts_with_jwcrypto_and_guest(plaintext):
    priv, pub = _guest_pair()
    doc = encrypt_to(pub, plaintext)
    assert json.loads(jwe.b64u_decode(doc["protected"], "h"))["epk"]["crv"] == "X25519"
    if plaintext:  # jwcrypto refuses an empty payload outright
        assert _jwcrypto_decrypt(doc, priv) == plaintext
    assert jwe.decrypt(doc, priv) == plaintext


@pytest.mark.parametrize("plaintext", [b"s", b"x" * 5000])
def test_ec_jwe_decrypts_with_jwcrypto(plaintext):
    priv, pub = _ec_pair()
    doc = encrypt_to(pub, plaintext)
    assert json.loads(jwe.b64u_decode(doc["protected"], "h"))["epk"]["crv"] == "P-256"
    assert _jwcrypto_decrypt(doc, priv) == plaintext


def test_rsa_jwe_decrypts_with_jwcrypto_and_small_keys_refused():
    priv = rsa.generate_private_key(65537, 2048)
    n = priv.public_key().public_numbers()
    pub = {"kty": "RSA", "alg": "RSA-OAEP-256", "n": _b64u_int(n.n, 256), "e": "AQAB"}
    assert _jwcrypto_decrypt(encrypt_to(pub, b"secret"), priv) == b"secret"
    small = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
    with pytest.raises(KbsProblem, match="2048"):
        _tee_key({**pub, "n": _b64u_int(small.n, 128)})
    with pytest.raises(KbsProblem):
        _tee_key({**pub, "e": "AA"})  # e = 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False, width=32) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)
_ECHO = "package policy\nimport rego.v1\necho := input\n"


def _native_and_term(inp: dict[str, object]) -> tuple[object, object]:
    """The query's answer (or error type) with the input built natively when allowed, and
    with every input forced through the JSON term."""
    def run() -> object:
        try:
            return PolicyEngine().query(_ECHO, {}, inp, "data.policy.echo")
        except policy_module.PolicyError:
            return policy_module.PolicyError

    native = run()
    real = policy_module._NOT_NATIVE
    try:
        policy_module._NOT_NATIVE = re.compile(".|\\n")
        term = run()
    finally:
        policy_module._NOT_NATIVE = real
    return native, term


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=8), JSON, max_size=5))
def test_native_input_equals_json_term(inp):
    native, term = _native_and_term(inp)
    assert native == term


@pytest.mark.parametrize("value", ["a\0b", 2**63, 10**19, -(2**64), "\ud800", [1, "x\0"]])
def test_inputs_native_cannot_carry_take_the_json_term(value):
    native, term = _native_and_term({"v": value})
    assert native == term


# -- service and ASGI ---------------------------------------------------------------------
@pytest.fixture()
def kbs(tmp_path: pathlib.Path):
    sim = SimAuthority()
    (tmp_path / "root.pem").write_bytes(sim.root_pem)
    key, pub = admin_keypair(tmp_path)
    cfg = KbsConfig(data_dir=str(tmp_path / "data"), trust_sim_root=(str(tmp_path / "root.pem"),),
                    admin_public_key=str(pub), insecure_http=True)
    (tmp_path / "data").mkdir()
    svc = KbsService(cfg)
    svc.store.put_resource("r/k/one", b"the secret")
    svc.store.put_reference_value("sim.measurement", ["ab" * 48])
    yield cfg, svc, sim, key
    svc.close()


def _attest_body(sim: SimAuthority, nonce: str, pub: dict[str, str]) -> bytes:
    rd = {"nonce": nonce, "tee-pubkey": pub}
    att = proto.Attestation(rd, json.loads(sim.evidence(proto.report_data(rd, "sim"))))
    return json.dumps(att.to_json()).encode()


def _session(svc: KbsService, sim: SimAuthority) -> tuple[str, Any]:
    challenge, cookie = svc.auth(json.dumps(proto.Request("sim").to_json()).encode())
    priv, pub = _guest_pair()
    svc.attest(cookie, _attest_body(sim, challenge.nonce, pub))
    return cookie, priv


def test_cached_release_expires_like_the_database_path(kbs, monkeypatch):
    cfg, svc, sim, _ = kbs
    cookie, priv = _session(svc, sim)
    assert svc.sessions.open(cookie).sid in svc._attested
    assert jwe.decrypt(svc.release("r/k/one", None, cookie), priv) == b"the secret"
    other = KbsService(cfg)  # another worker: no cache entry, database path
    try:
        assert jwe.decrypt(other.release("r/k/one", None, cookie), priv) == b"the secret"
        later = time.time() + cfg.session_timeout + cfg.token_lifetime + 1
        monkeypatch.setattr(time, "time", lambda: later)
        for service in (svc, other):
            with pytest.raises(KbsProblem) as e:
                service.release("r/k/one", None, cookie)
            assert e.value.name == "TokenNotFound"
    finally:
        other.close()


def test_asgi_fast_path_answers_like_the_routes(kbs):
    cfg, svc, sim, admin_key = kbs
    client = TestClient(create_app(cfg, svc), base_url="http://127.0.0.1")
    r = client.post("/kbs/v0/auth", json=proto.Request("sim").to_json())
    assert r.status_code == 200 and set(r.json()) == {"nonce", "extra-params"}
    set_cookie = r.headers["set-cookie"]
    for attr in ("HttpOnly", "Max-Age=300", "Path=/", "SameSite=strict"):
        assert attr in set_cookie
    assert "Secure" not in set_cookie  # insecure_http; HTTPS sets it (route and fast path alike)
    priv, pub = _guest_pair()
    r2 = client.post("/kbs/v0/attest", content=_attest_body(sim, r.json()["nonce"], pub))
    assert r2.status_code == 200 and r2.json()["token"].count(".") == 2
    r3 = client.get("/kbs/v0/resource/r/k/one")
    assert jwe.decrypt(r3.json(), priv) == b"the secret"
    # the same token as Bearer goes through FastAPI's route, with the same answer
    bearer = {"Authorization": "Bearer " + r2.json()["token"]}
    fresh = TestClient(create_app(cfg, svc), base_url="http://127.0.0.1")
    assert jwe.decrypt(fresh.get("/kbs/v0/resource/r/k/one", headers=bearer).json(),
                       priv) == b"the secret"
    admin = {"Authorization": "Bearer " + make_admin_token(admin_key)}
    assert fresh.get("/kbs/v0/resource/r/k/one", headers=admin).content == b"the secret"
    for path, status, name in (("/kbs/v0/resource/r/k/%6fne", 404, "InvalidRequestPath"),
                               ("/kbs/v0/resource/r/k", 404, "InvalidRequestPath"),
                               ("/kbs/v0/resource/r/k/none", 404, "ResourceNotFound")):
        r = client.get(path)
        assert (r.status_code, r.json()["type"]) == (status, PROBLEM + name), r.text
        assert r.headers["content-type"] == "application/problem+json"
    r = fresh.get("/kbs/v0/resource/r/k/one")  # no cookie
    assert r.status_code == 401 and r.json()["type"] == PROBLEM + "TokenNotFound"
    r = fresh.post("/kbs/v0/attest", content=b"{}")  # no session
    assert r.status_code == 401 and r.json()["type"] == PROBLEM + "AttestationError"
    r = fresh.post("/kbs/v0/auth", content=b"not json")
    assert r.status_code == 400 and r.json()["type"] == PROBLEM + "SerdeError"
    big = b"x" * (MAX_ATTEST_BYTES + 1)
    r = fresh.post("/kbs/v0/attest", content=big)
    assert r.status_code == 413 and r.json()["type"] == PROBLEM + "PayloadTooLarge"
    r = fresh.post("/kbs/v0/attest", content=iter([big[:1000], big[1000:]]))  # streamed
    assert r.status_code == 413 and r.json()["type"] == PROBLEM + "PayloadTooLarge"
    assert fresh.get("/kbs/v0/auth").status_code == 405  # other methods: FastAPI
