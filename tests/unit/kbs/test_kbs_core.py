"""KBS building blocks: tokens, policies, resource paths, the sample verifier, configuration."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.errors import BindingMismatch, ConfigError, InvalidInput, MalformedEvidence
from arca.kbs import config as kbs_config
from arca.kbs.evidence import SampleVerifier, evidence_bytes
from arca.kbs.policy import PolicyEngine, check_policy, default_policy, ear_status
from arca.kbs.problems import STATUS, KbsProblem
from arca.kbs.service import resource_path
from arca.kbs.tokens import (
    TokenError,
    TokenSigner,
    b64u,
    make_admin_token,
    split,
    verify_admin,
)
from arca.verifier.base import Expected


def test_token_roundtrip_and_refusals():
    signer = TokenSigner.from_pem(TokenSigner.generate_pem())
    now = time.time()
    token = signer.sign({"exp": int(now) + 60, "x": 1})
    assert signer.verify(token)["x"] == 1
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token, now=now + 120)
    with pytest.raises(TokenError, match="not from this KBS"):
        TokenSigner(ec.generate_private_key(ec.SECP256R1())).verify(token)
    with pytest.raises(TokenError, match="exp"):
        signer.verify(signer.sign({"iat": int(now)}))
    h, c, s = token.split(".")
    other_claims = b64u(json.dumps({"exp": int(now) + 60, "x": 2}).encode())
    with pytest.raises(TokenError):
        signer.verify(f"{h}.{other_claims}.{s}")
    hs = b64u(json.dumps({"alg": "HS256"}).encode())
    with pytest.raises(TokenError, match="ES256"):
        signer.verify(f"{hs}.{c}.{s}")
    jwk = signer.jwk
    assert jwk["alg"] == "ES256" and jwk["kty"] == "EC" and "d" not in jwk


def test_admin_token():
    key = ed25519.Ed25519PrivateKey.generate()
    now = time.time()
    assert verify_admin(make_admin_token(key), key.public_key())["exp"] > now
    with pytest.raises(TokenError, match="expired"):
        verify_admin(make_admin_token(key, now=now - 600), key.public_key())
    with pytest.raises(TokenError, match="admin key"):
        verify_admin(make_admin_token(ed25519.Ed25519PrivateKey.generate()), key.public_key())
    with pytest.raises(TokenError, match="iat"):
        verify_admin(make_admin_token(key, now=now + 3600), key.public_key(), now=now)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_split_never_crashes(text):
    try:
        split(text)
    except TokenError:
        pass


@pytest.mark.parametrize("vector,status", [
    ({"hardware": 2, "executables": 2}, "affirming"),
    ({"hardware": 2, "executables": 33}, "warning"),
    ({"hardware": 97, "executables": 2}, "contraindicated"),
    ({"hardware": 0}, "none"),
    ({"hardware": -2}, "affirming"),
])
def test_ear_status(vector, status):
    assert ear_status(vector) == status


ENGINE = PolicyEngine()
REF = {"sim.measurement": ["aa"], "sim.svn": ["2"]}


def _vector(tee, claims, reference=REF, allow_sim=True):
    data = {"reference": reference, "config": {"allow_sim": allow_sim, "allow_sample": False}}
    base = {"debug": False, "tcb_status": None}
    return ENGINE.trust_vector(default_policy("attestation"), data,
                               {"tee": tee, "claims": {**base, **claims}, "init_data": None})


@pytest.mark.parametrize("tee,claims,kw,hardware,executables", [
    ("sim", {"measurement": "aa", "svn": "2"}, {}, 2, 2),
    ("sim", {"measurement": "bb", "svn": "2"}, {}, 2, 33),
    ("sim", {"measurement": "aa", "svn": "1"}, {}, 2, 33),
    ("sim", {"measurement": "aa", "svn": "2"}, {"allow_sim": False}, 97, 2),
    ("sim", {"measurement": "aa", "svn": "2", "debug": True}, {}, 97, 2),
    ("sim", {"measurement": "aa"}, {"reference": {}}, 2, 33),
    ("sample", {"svn": "1"}, {"reference": {"sample.svn": ["1"]}}, 97, 2),
    ("tdx", {"mr_td": "x", "tcb_status": "OutOfDate"}, {"reference": {"tdx.mr_td": ["x"]}},
     32, 2),
    ("tdx", {"mr_td": "x", "tcb_status": "UpToDate"}, {"reference": {"tdx.mr_td": ["x"]}},
     2, 2),
])
def test_default_attestation_policy(tee, claims, kw, hardware, executables):
    v = _vector(tee, claims, **kw)
    assert (v["hardware"], v["executables"]) == (hardware, executables)


@pytest.mark.parametrize("policy,allowed", [
    ("package policy\nallow := true\n", True),
    ("package policy\nallow := \"yes\"\n", False),  # not exactly true: deny
    ("package policy\nallow := 1\n", False),
    ("package policy\nother := true\n", False),  # undefined: deny
    ('package policy\nimport rego.v1\nallow if input["resource-path"] == "a/b/c"\n', True),
    ('package policy\nimport rego.v1\nallow if data.reference.k[_] == "v"\n', True),
])
def test_resource_policy_decisions(policy, allowed):
    inp = {"resource-path": "a/b/c", "submods": {}}
    assert ENGINE.allow(policy, {"reference": {"k": ["v"]}}, inp) is allowed


@pytest.mark.parametrize("text", ["allow := true\n", "package policy\nallow := 1 +\n",
                                  "package policy\n" + "#" * 300_000])
def test_check_policy_refuses(text):
    with pytest.raises(InvalidInput):
        check_policy(text)


@pytest.mark.parametrize("path", ["default/key/app", "a.b/c_d/e-f", "r/t/1.0"])
def test_resource_path_ok(path):
    assert resource_path(path) == path


@pytest.mark.parametrize("path", ["", "a/b", "a/b/c/d", "../b/c", "a/../c", "a/b/..", "a/./c",
                                  "a/b/c%2F", "a//c", "a/b/c\x00", "a/b/" + "x" * 129, "/a/b"])
def test_resource_path_refused(path):
    with pytest.raises(KbsProblem) as e:
        resource_path(path)
    assert e.value.status == 404 and e.value.name == "InvalidRequestPath"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_resource_path_property(path):
    try:
        out = resource_path(path)
    except KbsProblem:
        return
    parts = out.split("/")
    assert len(parts) == 3 and ".." not in parts and "." not in parts


def _sample(rd, **extra):
    return json.dumps({"svn": "1", "report_data": base64.b64encode(rd).decode(), **extra}).encode()


def test_sample_verifier():
    v = SampleVerifier()
    rd = bytes(range(64))
    claims = v.verify(_sample(rd), expected=Expected(report_data=rd))
    assert claims.values["report_data"] == rd.hex() and claims.tee == "sample"
    with pytest.raises(BindingMismatch):
        v.verify(_sample(rd), expected=Expected(report_data=bytes(64)))
    with pytest.raises(BindingMismatch):
        v.verify(_sample(rd), expected=Expected(init_data_hash=b"\1" * 48))
    init = base64.b64encode(b"\1" * 48).decode()
    v.verify(_sample(rd, init_data=init), expected=Expected(init_data_hash=b"\1" * 48))
    for bad in (b"[]", b"{}", _sample(rd[:10]), b'{"svn": "1", "report_data": "!!"}'):
        with pytest.raises(MalformedEvidence):
            v.verify(bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_sample_verifier_never_crashes(data):
    try:
        SampleVerifier().verify(data)
    except MalformedEvidence:
        pass


def test_evidence_bytes():
    assert evidence_bytes("tdx", {"quote": base64.b64encode(b"q").decode()}) == b"q"
    assert json.loads(evidence_bytes("sim", {"a": 1})) == {"a": 1}
    for tee, bad in (("tdx", {"quote": "!"}), ("snp", {}), ("sgx", 5)):
        with pytest.raises(MalformedEvidence):
            evidence_bytes(tee, bad)


def test_problem_table():
    assert STATUS["PolicyDeny"] == 403 and STATUS["AdminAuth"] == 401
    body = KbsProblem("ResourceNotFound", "no x").body()
    assert body["type"].endswith("/ResourceNotFound") and body["status"] == 404


def test_config(tmp_path):
    f = tmp_path / "kbs.toml"
    f.write_text('listen = "0.0.0.0:9"\ndata_dir = "/x"\ntrust_sim_root = "/r.pem"\n')
    cfg = kbs_config.load(str(f), {"listen": "127.0.0.1:1", "db": None})
    assert cfg.listen == "127.0.0.1:1" and cfg.trust_sim_root == ("/r.pem",)
    assert cfg.db_url.startswith("sqlite:////x/")
    assert kbs_config.KbsConfig.from_json(cfg.to_json()) == cfg
    f.write_text('bogus = 1\ndata_dir = "/x"\n')
    with pytest.raises(ConfigError, match="bogus"):
        kbs_config.load(str(f), {})
    with pytest.raises(ConfigError, match="data directory"):
        kbs_config.load(None, {})
    with pytest.raises(ConfigError, match="tls-cert"):
        kbs_config.KbsConfig(data_dir=str(tmp_path)).check()
    with pytest.raises(ConfigError, match="HOST:PORT"):
        kbs_config.KbsConfig(data_dir=str(tmp_path), listen="nope", insecure_http=True).check()
