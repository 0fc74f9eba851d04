"""KBS protocol conformance and attacks, with a plain HTTP client against a real server.

The JWE is decrypted and the token verified with jwcrypto (not Arca's own code), so these
tests check the wire format, not Arca against itself.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import time
import urllib.parse

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwcrypto import jwe, jwk, jws

from arca.kbs.tokens import b64u, make_admin_token
from arca.wire import kbs_protocol as proto
from arca.wire.jcs import canonicalize
from tests.support.kbs import SimAuthority, admin_keypair, running_kbs, sample_evidence
from tests.support.postgres import pg_bin, postgres_cluster, reset_kbs_schema

pytestmark = pytest.mark.integration
PROBLEM = "https://github.com/confidential-containers/kbs/errors/"
SECRET = b"top secret \x00\xff"


@pytest.fixture(scope="module")
def pg_url():
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    with postgres_cluster() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("kbs")
    sim = SimAuthority()
    (d / "root.pem").write_bytes(sim.root_pem)
    key, pub = admin_keypair(d)
    db = []
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        reset_kbs_schema(url)
        db = ["--db", url]
    with running_kbs(d / "data", "--trust-sim-root", str(d / "root.pem"), *db,
                     "--admin-public-key", str(pub), "--insecure-allow-sample") as kbs:
        env = Env(kbs.url, sim, key, d)
        env.admin("POST", "/kbs/v0/resource/default/key/app", content=SECRET).raise_for_status()
        env.admin("POST", "/kbs/v0/reference-values",
                  json={"name": "sim.measurement", "values": ["ab" * 48]}).raise_for_status()
        yield env


class Env:
    def __init__(self, url, sim, admin_key, tmp):
        self.url, self.sim, self.admin_key, self.tmp = url, sim, admin_key, tmp

    def admin(self, method, path, token=None, **kw):
        token = token or make_admin_token(self.admin_key)
        return httpx.request(method, self.url + path,
                             headers={"Authorization": f"Bearer {token}"}, **kw)


def ec_key():
    k = jwk.JWK.generate(kty="EC", crv="P-256")
    pub = json.loads(k.export_public())
    return k, {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": pub["x"], "y": pub["y"]}


def rsa_key():
    k = jwk.JWK.generate(kty="RSA", size=2048)
    pub = json.loads(k.export_public())
    return k, {"kty": "RSA", "alg": "RSA-OAEP-256", "n": pub["n"], "e": pub["e"]}


def auth(client, tee="sim", version="0.4.0"):
    r = client.post("/kbs/v0/auth", json={"version": version, "tee": tee, "extra-params": {}})
    return r


def attest_body(nonce, pubkey, evidence, init_data=None):
    rd = {"nonce": nonce, "tee-pubkey": pubkey}
    body = {"runtime-data": rd, "tee-evidence": {
        "primary_evidence": json.loads(evidence(proto.report_data(rd, "sim"))),
        "additional_evidence": ""}}
    if init_data is not None:
        body["init-data"] = {"format": "toml", "body": init_data}
    return body


def rcar(env, tee="sim", key=None, evidence=None):
    client = httpx.Client(base_url=env.url)
    r = auth(client, tee)
    assert r.status_code == 200, r.text
    priv, pub = key or ec_key()
    ev = evidence or (env.sim.evidence if tee == "sim" else sample_evidence)
    r = client.post("/kbs/v0/attest", json=attest_body(r.json()["nonce"], pub, ev))
    return client, r, priv, pub


def problem(r, status, name):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == PROBLEM + name, body
    assert body["detail"]
    return body


# -- conformance ---------------------------------------------------------------------------
def test_auth_challenge_shape_and_cookie(env):
    client = httpx.Client(base_url=env.url)
    r = auth(client)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"nonce", "extra-params"}
    assert len(base64.b64decode(body["nonce"])) == 32
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{proto.SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "Max-Age=300" in cookie
    assert auth(client).json()["nonce"] != body["nonce"]  # fresh per session


@pytest.mark.parametrize("body,status,name", [
    ({"version": "0.3.0", "tee": "sim"}, 401, "AttestationError"),
    ({"version": "1.4.0", "tee": "sim"}, 401, "AttestationError"),
    ({"version": "0.4.0", "tee": "tpm"}, 401, "AttestationError"),
    ({"version": "0.4.0"}, 400, "SerdeError"),
    ({"version": "0.4.0", "tee": "sim", "bogus": 1}, 400, "SerdeError"),
    ([1, 2], 400, "SerdeError"),
])
def test_auth_refusals(env, body, status, name):
    problem(httpx.post(env.url + "/kbs/v0/auth", json=body), status, name)


def test_auth_not_json(env):
    problem(httpx.post(env.url + "/kbs/v0/auth", content=b"{nope"), 400, "SerdeError")


def test_attest_token_claims_and_signature(env):
    _, r, _, pub = rcar(env)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"token"}
    token = r.json()["token"]
    keys = httpx.get(env.url + "/.well-known/kbs-token-jwks.json").json()["keys"]
    assert len(keys) == 1 and keys[0]["alg"] == "ES256"
    verifier = jws.JWS()
    verifier.deserialize(token)
    verifier.verify(jwk.JWK(**keys[0]), alg="ES256")  # raises if invalid
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"] == keys[0]["kid"]
    claims = json.loads(verifier.payload)
    assert claims["eat_profile"] == "tag:github.com,2023:veraison/ear"
    assert claims["exp"] > claims["iat"] >= int(time.time()) - 5
    assert set(claims["ear.verifier-id"]) == {"developer", "build"}
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.status"] == "affirming"
    assert cpu0["ear.trustworthiness-vector"]["hardware"] == 2
    assert cpu0["ear.trustworthiness-vector"]["executables"] == 2
    assert len(cpu0["ear.trustworthiness-vector"]) == 8
    assert cpu0["ear.appraisal-policy-id"] == "arca-default"
    evidence_claims = cpu0["ear.veraison.annotated-evidence"]
    assert evidence_claims["measurement"] == "ab" * 48 and evidence_claims["tee"] == "sim"
    assert claims["tee-pubkey"] == pub


def test_resource_jwe_with_cookie_and_bearer(env):
    client, r, priv, _ = rcar(env)
    token = r.json()["token"]
    for resp in (client.get("/kbs/v0/resource/default/key/app"),
                 httpx.get(env.url + "/kbs/v0/resource/default/key/app",
                           headers={"Authorization": f"Bearer {token}"})):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert set(body) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
        header = json.loads(base64.urlsafe_b64decode(body["protected"] + "=="))
        assert header["alg"] == "ECDH-ES+A256KW" and header["enc"] == "A256GCM"
        assert header["epk"]["crv"] == "P-256"
        obj = jwe.JWE()
        obj.deserialize(json.dumps(body), key=priv)
        assert obj.payload == SECRET


def test_resource_jwe_to_rsa_key(env):
    client, r, priv, _ = rcar(env, key=rsa_key())
    assert r.status_code == 200, r.text
    body = client.get("/kbs/v0/resource/default/key/app").json()
    assert json.loads(base64.urlsafe_b64decode(body["protected"] + "=="))["alg"] == "RSA-OAEP-256"
    obj = jwe.JWE()
    obj.deserialize(json.dumps(body), key=priv)
    assert obj.payload == SECRET


def test_init_data_binding(env):
    toml = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\nkbs_url = "http://x"\n'
    digest = hashlib.sha384(toml.encode()).digest()
    for bound, status in ((digest, 200), (hashlib.sha384(b"other").digest(), 401)):
        client = httpx.Client(base_url=env.url)
        nonce = auth(client).json()["nonce"]
        _, pub = ec_key()

        def evidence(rd, bound=bound):
            return env.sim.evidence(rd, init_data_hash=bound)

        r = client.post("/kbs/v0/attest", json=attest_body(nonce, pub, evidence, toml))
        assert r.status_code == status, r.text
        if status == 200:
            claims = json.loads(base64.urlsafe_b64decode(r.json()["token"].split(".")[1] + "=="))
            annotated = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
            assert annotated["init_data"] == digest.hex()
        else:
            problem(r, 401, "AttestationError")


def test_health_metrics_openapi(env):
    assert httpx.get(env.url + "/healthz").json() == {"status": "ok"}
    rcar(env)
    text = httpx.get(env.url + "/metrics").text
    assert 'arca_kbs_attestations_total{' in text and 'tee="sim",result="ok"' in text
    assert "arca_kbs_attest_seconds_bucket" in text
    doc = httpx.get(env.url + "/openapi.json").json()
    assert "/kbs/v0/auth" in doc["paths"] and "/kbs/v0/attest" in doc["paths"]


# -- attacks ---------------------------------------------------------------------------------
def test_replayed_nonce(env):
    client = httpx.Client(base_url=env.url)
    nonce = auth(client).json()["nonce"]
    _, pub = ec_key()
    body = attest_body(nonce, pub, env.sim.evidence)
    assert client.post("/kbs/v0/attest", json=body).status_code == 200
    problem(client.post("/kbs/v0/attest", json=body), 401, "AttestationError")
    other = httpx.Client(base_url=env.url)  # a new session cannot reuse the old nonce either
    auth(other)
    problem(other.post("/kbs/v0/attest", json=body), 401, "AttestationError")


def test_evidence_bound_to_other_runtime_data(env):
    client = httpx.Client(base_url=env.url)
    nonce = auth(client).json()["nonce"]
    _, pub = ec_key()
    _, attacker = ec_key()
    body = attest_body(nonce, pub, env.sim.evidence)
    body["runtime-data"]["tee-pubkey"] = attacker  # evidence was made for the other key
    problem(client.post("/kbs/v0/attest", json=body), 401, "AttestationError")
    # nothing changed: the session is not attested and the nonce is spent
    problem(client.get("/kbs/v0/resource/default/key/app"), 401, "TokenNotFound")
    body["runtime-data"]["tee-pubkey"] = pub
    problem(client.post("/kbs/v0/attest", json=body), 401, "AttestationError")


def test_wrong_nonce_in_runtime_data(env):
    client = httpx.Client(base_url=env.url)
    auth(client)
    _, pub = ec_key()
    fake = base64.b64encode(b"\1" * 32).decode()
    problem(client.post("/kbs/v0/attest", json=attest_body(fake, pub, env.sim.evidence)),
            401, "AttestationError")


def test_untrusted_sim_root(env):
    rogue = SimAuthority(name="Rogue Root")
    _, r, _, _ = rcar(env, evidence=rogue.evidence)
    problem(r, 401, "AttestationError")


def test_attest_without_or_with_unknown_session(env):
    _, pub = ec_key()
    body = attest_body("x", pub, env.sim.evidence)
    problem(httpx.post(env.url + "/kbs/v0/attest", json=body), 401, "AttestationError")
    problem(httpx.post(env.url + "/kbs/v0/attest", json=body,
                       cookies={proto.SESSION_COOKIE: "forged"}), 401, "AttestationError")


def _token_parts(token):
    h, c, s = token.split(".")
    return h, json.loads(base64.urlsafe_b64decode(c + "==")), s


def test_token_from_another_key_or_tampered(env):
    _, r, _, _ = rcar(env)
    h, claims, s = _token_parts(r.json()["token"])
    _, attacker = ec_key()
    claims["tee-pubkey"] = attacker  # redirect the JWE to the attacker's key
    tampered = f"{h}.{b64u(json.dumps(claims).encode())}.{s}"
    url = env.url + "/kbs/v0/resource/default/key/app"
    problem(httpx.get(url, headers={"Authorization": f"Bearer {tampered}"}), 401,
            "TokenVerifierError")
    other = jwk.JWK.generate(kty="EC", crv="P-256")  # a token from another KBS
    forged = jws.JWS(json.dumps(claims).encode())
    forged.add_signature(other, alg="ES256", protected=json.dumps({"alg": "ES256"}))
    problem(httpx.get(url, headers={"Authorization": f"Bearer {forged.serialize(True)}"}),
            401, "TokenVerifierError")
    problem(httpx.get(url, headers={"Authorization": "Bearer a.b.c"}), 401, "TokenVerifierError")
    problem(httpx.get(url), 401, "TokenNotFound")


def test_challenged_session_cannot_fetch(env):
    client = httpx.Client(base_url=env.url)
    auth(client)
    problem(client.get("/kbs/v0/resource/default/key/app"), 401, "TokenNotFound")


def test_expired_session(tmp_path):
    sim = SimAuthority()
    (tmp_path / "root.pem").write_bytes(sim.root_pem)
    with running_kbs(tmp_path / "data", "--trust-sim-root", str(tmp_path / "root.pem"),
                     "--session-timeout", "1") as kbs:
        client = httpx.Client(base_url=kbs.url)
        nonce = auth(client).json()["nonce"]
        _, pub = ec_key()
        time.sleep(1.3)
        problem(client.post("/kbs/v0/attest", json=attest_body(nonce, pub, sim.evidence)),
                401, "AttestationError")
        client = httpx.Client(base_url=kbs.url)  # an attested session expires too
        nonce = auth(client).json()["nonce"]
        assert client.post("/kbs/v0/attest",
                           json=attest_body(nonce, pub, sim.evidence)).status_code == 200
        time.sleep(1.3)
        problem(client.get("/kbs/v0/resource/default/key/app"), 401, "TokenNotFound")


def test_admin_token_max_lifetime_from_the_command_line(tmp_path):
    key, pub = admin_keypair(tmp_path)
    with running_kbs(tmp_path / "data", "--admin-public-key", str(pub),
                     "--admin-token-max-lifetime", "60") as kbs:
        url = kbs.url + "/kbs/v0/resource-policy"
        long_lived = {"Authorization": f"Bearer {make_admin_token(key, lifetime=600)}"}
        problem(httpx.get(url, headers=long_lived), 401, "AdminAuth")
        short = {"Authorization": f"Bearer {make_admin_token(key, lifetime=30)}"}
        assert httpx.get(url, headers=short).status_code == 200


def test_policy_deny(env):
    # sample evidence is enabled but has no reference values: not affirming, denied
    _, r, _, _ = rcar(env, tee="sample")
    assert r.status_code == 200
    url = env.url + "/kbs/v0/resource/default/key/app"
    token = r.json()["token"]
    problem(httpx.get(url, headers={"Authorization": f"Bearer {token}"}), 403, "PolicyDeny")
    # a resource policy that allows only another path denies this one, even when affirming
    policy = ('package policy\nimport rego.v1\ndefault allow := false\n'
              'allow if input["resource-path"] == "default/key/other"\n')
    env.admin("POST", "/kbs/v0/resource-policy",
              json={"policy": base64.b64encode(policy.encode()).decode()}).raise_for_status()
    try:
        client, r, _, _ = rcar(env)
        problem(client.get("/kbs/v0/resource/default/key/app"), 403, "PolicyDeny")
    finally:
        default = ('package policy\nimport rego.v1\ndefault allow := false\n'
                   'allow if input.submods.cpu0["ear.status"] == "affirming"\n')
        env.admin("POST", "/kbs/v0/resource-policy",
                  json={"policy": base64.b64encode(default.encode()).decode()}).raise_for_status()


def test_missing_resource_is_404_after_policy(env):
    client, _, _, _ = rcar(env)
    problem(client.get("/kbs/v0/resource/default/key/absent"), 404, "ResourceNotFound")


def raw_request(url, method, path, headers=None, body=None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = r.status, json.loads(r.read() or b"null")
    conn.close()
    return out


TRAVERSALS = [
    "/kbs/v0/resource/../../../etc/passwd",
    "/kbs/v0/resource/default/../key/app",
    "/kbs/v0/resource/default/key/..",
    "/kbs/v0/resource/default/%2e%2e/app",
    "/kbs/v0/resource/default/key%2F..%2F..%2Fapp/x",
    "/kbs/v0/resource/%2E%2E/%2E%2E/kbs.db",
    "/kbs/v0/resource/default/key/app/extra",
    "/kbs/v0/resource/default/key",
    "/kbs/v0/resource/default/key/a%00b",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_refused(env, path):
    client, r, _, _ = rcar(env)
    token = r.json()["token"]
    status, body = raw_request(env.url, "GET", path, {"Authorization": f"Bearer {token}"})
    assert status == 404 and body["type"] == PROBLEM + "InvalidRequestPath", body
    admin = {"Authorization": f"Bearer {make_admin_token(env.admin_key)}"}
    status, body = raw_request(env.url, "POST", path, admin, b"pwned")
    assert status == 404 and body["type"] == PROBLEM + "InvalidRequestPath", body
    before = sorted(p.name for p in (env.tmp / "data").iterdir())
    assert env.admin("GET", "/kbs/v0/resource/default/key/app").content == SECRET
    assert sorted(p.name for p in (env.tmp / "data").iterdir()) == before


def _admin_tokens(env):
    now = int(time.time())
    rogue = ed25519.Ed25519PrivateKey.generate()

    def signed(header, claims, key=env.admin_key):
        si = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims).encode())}"
        return f"{si}.{b64u(key.sign(si.encode()))}"

    return {
        "forged": make_admin_token(rogue),
        "expired": make_admin_token(env.admin_key, now=now - 3600),
        "no-exp": signed({"alg": "EdDSA"}, {"iat": now}),
        "alg-none": b64u(b'{"alg":"none"}') + "." + b64u(json.dumps({"exp": now + 60}).encode())
        + ".",
        "string-exp": signed({"alg": "EdDSA"}, {"exp": str(now + 60)}),
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize("kind", ["missing", "forged", "expired", "no-exp", "alg-none",
                                  "string-exp", "garbage", "attestation-token", "basic"])
def test_admin_auth_refused(env, kind):
    if kind == "attestation-token":
        headers = {"Authorization": f"Bearer {rcar(env)[1].json()['token']}"}
    elif kind == "missing":
        headers = {}
    elif kind == "basic":
        headers = {"Authorization": "Basic YWRtaW46YWRtaW4="}
    else:
        headers = {"Authorization": f"Bearer {_admin_tokens(env)[kind]}"}
    calls = [
        ("POST", "/kbs/v0/resource/default/key/app", {"content": b"pwned"}),
        ("DELETE", "/kbs/v0/resource/default/key/app", {}),
        ("POST", "/kbs/v0/resource-policy",
         {"json": {"policy": base64.b64encode(b"package policy\nallow := true\n").decode()}}),
        ("POST", "/kbs/v0/attestation-policy",
         {"json": {"policy": base64.b64encode(b"package policy\nhardware := 2\n").decode()}}),
        ("POST", "/kbs/v0/reference-values", {"json": {"name": "sim.measurement",
                                                       "values": ["00"]}}),
        ("GET", "/kbs/v0/reference-values", {}),
        ("GET", "/kbs/v0/resource-policy", {}),
    ]
    for method, path, kw in calls:
        r = httpx.request(method, env.url + path, headers=headers, **kw)
        if kind == "attestation-token" and method == "GET" and "resource/" in path:
            continue
        if kind == "basic":
            problem(r, 401, "TokenNotFound")
        else:
            problem(r, 401, "AdminAuth")
    # nothing changed
    assert env.admin("GET", "/kbs/v0/resource/default/key/app").content == SECRET
    assert env.admin("GET", "/kbs/v0/reference-values").json()["sim.measurement"] == ["ab" * 48]
    client, _, _, _ = rcar(env)
    assert client.get("/kbs/v0/resource/default/key/app").status_code == 200


def test_oversized_bodies(env):
    admin = {"Authorization": f"Bearer {make_admin_token(env.admin_key)}"}
    problem(httpx.post(env.url + "/kbs/v0/auth", content=b"{" + b" " * 70000 + b"}"),
            413, "PayloadTooLarge")
    problem(httpx.post(env.url + "/kbs/v0/attest", content=b"x" * (600 * 1024)),
            413, "PayloadTooLarge")
    problem(httpx.post(env.url + "/kbs/v0/resource/default/key/big", headers=admin,
                       content=b"x" * (1024 * 1024 + 1)), 413, "PayloadTooLarge")

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(40):
            yield b"y" * 65536

    problem(httpx.post(env.url + "/kbs/v0/resource/default/key/big", headers=admin,
                       content=chunks()), 413, "PayloadTooLarge")
    problem(env.admin("GET", "/kbs/v0/resource/default/key/big"), 404, "ResourceNotFound")


def test_admin_roundtrip(env):
    assert env.admin("POST", "/kbs/v0/resource/r1/t1/x", content=b"v1").status_code == 200
    assert env.admin("GET", "/kbs/v0/resource/r1/t1/x").content == b"v1"
    assert env.admin("DELETE", "/kbs/v0/resource/r1/t1/x").status_code == 200
    problem(env.admin("DELETE", "/kbs/v0/resource/r1/t1/x"), 404, "ResourceNotFound")
    problem(env.admin("POST", "/kbs/v0/resource-policy", json={"policy": "!!"}), 400,
            "SerdeError")
    bad = base64.b64encode(b"package policy\nallow := 1 +\n").decode()
    problem(env.admin("POST", "/kbs/v0/resource-policy", json={"policy": bad}), 400,
            "SerdeError")
    got = env.admin("GET", "/kbs/v0/attestation-policy").json()
    assert "package policy" in base64.b64decode(got["policy"]).decode()


def test_attestation_policy_and_reference_values_drive_status(env):
    env.admin("POST", "/kbs/v0/reference-values",
              json={"name": "sim.measurement", "values": ["cd" * 48]}).raise_for_status()
    try:
        client, r, _, _ = rcar(env)
        claims = _token_parts(r.json()["token"])[1]
        assert claims["submods"]["cpu0"]["ear.status"] == "warning"
        problem(client.get("/kbs/v0/resource/default/key/app"), 403, "PolicyDeny")
    finally:
        env.admin("POST", "/kbs/v0/reference-values",
                  json={"name": "sim.measurement", "values": ["ab" * 48]}).raise_for_status()


def test_report_data_is_sha384_of_jcs(env):
    rd = {"nonce": "n", "tee-pubkey": {"kty": "EC", "y": "b", "x": "a", "crv": "P-256"}}
    assert proto.report_data(rd, "sim") == hashlib.sha384(canonicalize(rd)).digest() + bytes(16)
    assert canonicalize(rd) == (b'{"nonce":"n","tee-pubkey":{"crv":"P-256","kty":"EC",'
                                b'"x":"a","y":"b"}}')
