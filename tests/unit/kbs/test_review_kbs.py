"""Review findings in the KBS: hostile inputs get a documented problem, never a 500."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest
from starlette.testclient import TestClient

from arca.errors import MalformedEvidence, WireFormatError
from arca.kbs.app import create_app
from arca.kbs.config import KbsConfig
from arca.kbs.evidence import SampleVerifier
from arca.kbs.service import KbsService
from arca.wire import kbs_protocol as proto
from arca.wire.simreport import SimEvidence
from tests.support.kbs import SimAuthority, admin_keypair

PROBLEM = "https://github.com/confidential-containers/kbs/errors/"
DEEP = "[" * 20000  # json.loads raises RecursionError (not ValueError) on this


@pytest.fixture()
def client(tmp_path: pathlib.Path):
    sim = SimAuthority()
    (tmp_path / "root.pem").write_bytes(sim.root_pem)
    _, pub = admin_keypair(tmp_path)
    (tmp_path / "data").mkdir()
    cfg = KbsConfig(data_dir=str(tmp_path / "data"), trust_sim_root=(str(tmp_path / "root.pem"),),
                    admin_public_key=str(pub), insecure_http=True)
    svc = KbsService(cfg)
    yield TestClient(create_app(cfg, svc), base_url="http://127.0.0.1")
    svc.close()


def test_review_deeply_nested_auth_and_attest_bodies_are_400(client):
    r = client.post("/kbs/v0/auth", content=DEEP.encode())
    assert (r.status_code, r.json()["type"]) == (400, PROBLEM + "SerdeError"), r.text
    client.post("/kbs/v0/auth", json=proto.Request("sim").to_json())
    r = client.post("/kbs/v0/attest", content=DEEP.encode())
    assert (r.status_code, r.json()["type"]) == (400, PROBLEM + "SerdeError"), r.text


def test_review_deeply_nested_sim_evidence_is_refused_not_500(client):
    nonce = client.post("/kbs/v0/auth", json=proto.Request("sim").to_json()).json()["nonce"]
    pub = {"kty": "EC", "crv": "P-256", "x": "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
           "y": "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps"}
    body = {"runtime-data": {"nonce": nonce, "tee-pubkey": pub},
            "tee-evidence": {"primary_evidence": DEEP[:30000]}}
    r = client.post("/kbs/v0/attest", content=json.dumps(body).encode())
    assert (r.status_code, r.json()["type"]) == (401, PROBLEM + "AttestationError"), r.text


def test_review_deeply_nested_jwt_header_is_401_not_500(client):
    header = base64.urlsafe_b64encode(b"[" * 12000).rstrip(b"=").decode()
    bearer = {"Authorization": f"Bearer {header}.e30.AA"}
    for method, path in (("GET", "/kbs/v0/resource/r/k/one"), ("GET", "/kbs/v0/resource-policy")):
        r = client.request(method, path, headers=bearer)
        assert r.status_code == 401, r.text


def test_review_deeply_nested_sample_evidence_is_malformed():
    with pytest.raises(MalformedEvidence):
        SampleVerifier().verify(DEEP.encode())


def test_review_wire_parsers_turn_deep_nesting_into_wire_format_errors():
    with pytest.raises(WireFormatError):
        proto.parse_json(DEEP.encode(), "answer")
    with pytest.raises(WireFormatError):
        SimEvidence.from_bytes(DEEP.encode())
