"""A CoCo guest (guest-components' kbs_protocol client) against ``arca kbs serve``, byte for byte.

Reproduced upstream behaviour:

* ``attestation-agent/kbs_protocol/src/client/rcar_client.rs``: the auth request (compact
  serde JSON ``{"version","tee","extra-params":{"supported-hash-algorithms":[...]}}``), the
  default hash when the challenge selects none (SHA-384), the report data = hash of the RFC 8785
  form of ``{"tee-pubkey","nonce","additional-evidence"}``, the attest body
  ``{"init-data","runtime-data","tee-evidence":{"primary_evidence","additional_evidence"}}``
  and the resource fetch with the session cookie;
* ``attestation-agent/kbs_protocol/src/builder.rs``: ``User-Agent`` and the cookie store;
* ``attestation-agent/kbs_protocol/src/keypair.rs``: the default P-256 ``ECDH-ES+A256KW`` key;
* ``attestation-agent/attester/src/sample/mod.rs``: sample evidence ``{"svn":"1",
  "report_data": base64 of the raw 48-byte digest}``;
* ``attestation-agent/attester/src/tdx/mod.rs``: TDX evidence ``{"cc_eventlog","quote"}``;
* ``attestation-agent/attester/src/snp/mod.rs``: SNP evidence ``{"attestation_report",
  "cert_chain"}`` (sev crate serde forms).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import pathlib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from jwcrypto import jwe, jwk

from arca.kbs.evidence_formats import snp_report_to_json
from arca.kbs.tokens import make_admin_token
from arca.wire.jcs import canonicalize
from tests.support.kbs import admin_keypair, running_kbs

pytestmark = pytest.mark.integration
USER_AGENT = "attestation-agent-kbs-client/0.1.0"
VECTORS = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "dev"
SNP = VECTORS / "snp-trustee-1"
TDX = VECTORS / "tdx-dcapqvl-1"


#: An SNP broker for the recorded Trustee report. ``arca kbs serve`` enables SNP only with a
#: minimum TCB and AMD's ARK CRL (issue 13 item 8); the dev vectors carry no AMD-signed CRL, so
#: this broker is Arca's own server and service with the real SNP verifier given the report's
#: product and TCB as the minimum, revocation not required (the only difference).
_SNP_KBS = """
import asyncio, pathlib, socket, sys
from arca.kbs.app import create_app
from arca.kbs.config import KbsConfig
from arca.kbs.evidence import SampleVerifier
from arca.kbs.httpserver import serve_forever
from arca.kbs.server import prepare
from arca.kbs.service import KbsService
from arca.verifier.collateral import DirectoryCollateral
from arca.verifier.snp.tcbpolicy import MinimumTcb
from arca.verifier.snp.verifier import SnpVerifier
data, col, port_file = sys.argv[1:4]
cfg = KbsConfig(data_dir=data, insecure_http=True, insecure_allow_sample=True)
prepare(cfg)
tcb = MinimumTcb.parse(["Milan:bootloader=3,tee=0,snp=8,microcode=115"])
svc = KbsService(cfg, verifiers={"snp": SnpVerifier(DirectoryCollateral(col), min_tcb=tcb),
                                 "sample": SampleVerifier()})
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
pathlib.Path(port_file).write_text(str(sock.getsockname()[1]))
asyncio.run(serve_forever(create_app(cfg, svc), sock, None))
"""


@contextlib.contextmanager
def snp_kbs(tmp_path: pathlib.Path, col: pathlib.Path) -> Iterator[str]:
    (tmp_path / "snp-data").mkdir(parents=True, exist_ok=True)
    port_file = tmp_path / "snp-port"
    proc = subprocess.Popen([sys.executable, "-c", _SNP_KBS, str(tmp_path / "snp-data"),
                             str(col), str(port_file)])
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "SNP KBS did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text()}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _dumps(obj: object) -> bytes:
    """serde_json::to_vec: compact, fields in declaration order."""
    return json.dumps(obj, separators=(",", ":")).encode()


class CocoGuest:
    """The RCAR exchange as guest-components sends it, over one keep-alive connection."""

    def __init__(self, url: str, tee: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.tee, self.cookie = tee, ""
        self.key = jwk.JWK.generate(kty="EC", crv="P-256")
        pub = json.loads(self.key.export_public())
        self.pubkey = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW",
                       "x": pub["x"], "y": pub["y"]}

    def request(self, method: str, path: str, body: bytes | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        headers = {"user-agent": USER_AGENT, "accept": "*/*"}
        if body is not None:
            headers["content-type"] = "application/json"
        if self.cookie:
            headers["cookie"] = self.cookie
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        for name, value in r.getheaders():
            if name.lower() == "set-cookie":
                self.cookie = value.split(";")[0]
        return r.status, dict(r.getheaders()), data

    def auth(self) -> dict[str, object]:
        status, _, body = self.request("POST", "/kbs/v0/auth", _dumps({
            "version": "0.4.0", "tee": self.tee,
            "extra-params": {"supported-hash-algorithms": ["sha256", "sha384", "sha512"]}}))
        assert status == 200, body
        challenge: dict[str, object] = json.loads(body)
        return challenge

    def runtime_data_digest(self, nonce: str, additional: str = "") -> bytes:
        return hashlib.sha384(canonicalize({"tee-pubkey": self.pubkey, "nonce": nonce,
                                            "additional-evidence": additional})).digest()

    def attest(self, nonce: str, primary: object, init_data: str | None = None
               ) -> tuple[int, bytes]:
        init = None if init_data is None else {"format": "toml", "body": init_data}
        status, _, body = self.request("POST", "/kbs/v0/attest", _dumps({
            "init-data": init,
            "runtime-data": {"tee-pubkey": self.pubkey, "nonce": nonce},
            "tee-evidence": {"primary_evidence": primary, "additional_evidence": ""}}))
        return status, body


def test_coco_sample_guest_gets_its_secret(tmp_path):
    key, pub = admin_keypair(tmp_path)
    with running_kbs(tmp_path / "data", "--admin-public-key", str(pub),
                     "--insecure-allow-sample") as kbs:
        admin = {"Authorization": f"Bearer {make_admin_token(key)}"}
        import httpx

        httpx.post(kbs.url + "/kbs/v0/resource/default/key/app", content=b"s3cret",
                   headers=admin).raise_for_status()
        httpx.post(kbs.url + "/kbs/v0/reference-values", headers=admin,
                   json={"name": "sample.svn", "values": ["1"]}).raise_for_status()
        guest = CocoGuest(kbs.url, "sample")
        challenge = guest.auth()
        assert set(challenge) == {"nonce", "extra-params"}
        nonce = str(challenge["nonce"])
        digest = guest.runtime_data_digest(nonce)  # no selected-hash-algorithm: SHA-384
        assert len(digest) == 48
        status, body = guest.attest(nonce, {"svn": "1",
                                            "report_data": base64.b64encode(digest).decode()})
        assert status == 200, body
        token = json.loads(body)["token"]
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert claims["submods"]["cpu0"]["ear.status"] == "affirming"
        # the resource, with the session cookie (reqwest's cookie store), as a JWE to the key
        status, _, body = guest.request("GET", "/kbs/v0/resource/default/key/app")
        assert status == 200, body
        msg = jwe.JWE()
        msg.deserialize(body.decode(), key=guest.key)
        assert msg.payload == b"s3cret"


def test_coco_sample_binding_is_exact(tmp_path):
    """Trustee's sample verifier compares the digest exactly: a digest of other runtime data,
    or a truncated one, is refused."""
    with running_kbs(tmp_path / "data", "--insecure-allow-sample") as kbs:
        for report_data in (lambda d: hashlib.sha384(b"other").digest(),
                            lambda d: d[:32], lambda d: d + b"\1" + bytes(15)):
            guest = CocoGuest(kbs.url, "sample")
            nonce = str(guest.auth()["nonce"])
            rd = report_data(guest.runtime_data_digest(nonce))
            status, body = guest.attest(nonce, {"svn": "1",
                                                "report_data": base64.b64encode(rd).decode()})
            assert status == 401, body
            assert json.loads(body)["type"].endswith("/AttestationError")


@pytest.mark.skipif(not (SNP / "report.bin").exists(), reason="shared vectors absent")
def test_coco_snp_evidence_reaches_the_verifier(tmp_path):
    """guest-components' SNP evidence is parsed, its chain and signature verified; it is
    refused only because a recorded report cannot carry this session's nonce."""
    col = tmp_path / "collateral"
    col.mkdir()
    for name in ("ask.pem", "ark.pem"):
        (col / name).write_bytes((SNP / name).read_bytes())
    with snp_kbs(tmp_path, col) as url:
        guest = CocoGuest(url, "snp")
        nonce = str(guest.auth()["nonce"])
        der = ssl.PEM_cert_to_DER_cert((SNP / "vcek.pem").read_text())
        primary = {"attestation_report": snp_report_to_json((SNP / "report.bin").read_bytes()),
                   "cert_chain": [{"cert_type": "VCEK", "data": list(der)}]}
        status, body = guest.attest(nonce, primary)
        assert status == 401, body
        problem = json.loads(body)
        assert problem["type"].endswith("/AttestationError")
        assert "report_data" in problem["detail"]  # past parsing, chain and signature
        # a tampered report fails earlier, at the signature
        primary["attestation_report"]["guest_svn"] += 1
        nonce = str(guest.auth()["nonce"])
        status, body = guest.attest(nonce, primary)
        assert status == 401 and "report_data" not in json.loads(body)["detail"], body


@pytest.mark.skipif(not (TDX / "quote.bin").exists(), reason="shared vectors absent")
def test_coco_tdx_evidence_reaches_the_verifier(tmp_path):
    with running_kbs(tmp_path / "data", "--collateral", str(TDX)) as kbs:
        guest = CocoGuest(kbs.url, "tdx")
        nonce = str(guest.auth()["nonce"])
        quote = base64.b64encode((TDX / "quote.bin").read_bytes()).decode()
        status, body = guest.attest(nonce, {"cc_eventlog": base64.b64encode(b"\0" * 64).decode(),
                                            "quote": quote})
        assert status == 401, body
        detail = json.loads(body)["detail"]
        assert "malformed" not in detail and "cc_eventlog" not in detail, detail


@pytest.mark.parametrize("tee", ["tdx", "sample", pytest.param("snp", marks=pytest.mark.skipif(
    not (SNP / "report.bin").exists(), reason="shared vectors absent"))])
def test_arca_guest_requests_follow_trustees_rules(tmp_path, tee):
    """What Arca's guest client sends for tdx/sample is what Trustee's KBS checks:
    report data = hash of ``{"tee-pubkey","nonce","additional-evidence"}``
    (``kbs/src/attestation/backend.rs``), regularized to 64 bytes for TDX
    (``deps/verifier/src/tdx/mod.rs``), exact for sample (``deps/verifier/src/sample/mod.rs``);
    TDX evidence deserializes as Trustee's ``TdxEvidence`` (``quote``, optional
    ``cc_eventlog``); the auth request is kbs-types' ``Request``."""
    from arca.guest.kbs_client import KbsClient
    from arca.wire.errors import ArcaError
    from tests.support.kbs_td import RecordingProxy

    asked: list[bytes] = []

    def evidence(report_data: bytes) -> bytes:
        asked.append(report_data)
        if tee == "sample":
            return json.dumps({"svn": "1",
                               "report_data": base64.b64encode(report_data).decode()}).encode()
        if tee == "snp":  # a real report, recorded elsewhere: refused at the binding
            return (SNP / "report.bin").read_bytes()
        return b"\x04\x00\x02\x00" + bytes(60)  # not a real quote: Arca's KBS refuses it

    col = tmp_path / "collateral"
    col.mkdir()
    for name in ("vcek.pem", "ask.pem", "ark.pem"):
        if (SNP / name).exists():
            (col / name).write_bytes((SNP / name).read_bytes())
    broker = (snp_kbs(tmp_path, col) if tee == "snp" else running_kbs(
        tmp_path / "data", "--insecure-allow-sample", "--collateral", str(TDX)))
    with broker as kbs:
        url = kbs if isinstance(kbs, str) else kbs.url
        proxy = RecordingProxy(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        try:
            client = KbsClient(proxy.url, tee=tee, evidence=evidence, tee_key="P-256")
            try:
                client.attest()
            except ArcaError as e:
                assert tee in ("tdx", "snp"), e  # refused after parsing the request
                if tee == "snp":  # parsed, chain and signature verified: only the binding
                    assert "report_data" in str(e), e
            sent = proxy.sent()
        finally:
            proxy.close()
    bodies = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"POST ", 1)[0])
              for part in sent.split(b"POST /kbs/v0/")[1:]]
    auth, attest = bodies[0], bodies[1]
    assert set(auth) == {"version", "tee", "extra-params"} and auth["tee"] == tee
    rd = attest["runtime-data"]
    digest = hashlib.sha384(canonicalize({**rd, "additional-evidence": ""})).digest()
    assert asked == [digest if tee == "sample" else digest + bytes(16)]
    primary = attest["tee-evidence"]["primary_evidence"]
    if tee == "tdx":
        assert set(primary) <= {"quote", "cc_eventlog"} and "quote" in primary
    elif tee == "snp":  # guest-components' SnpEvidence; sev crate field order
        assert set(primary) == {"attestation_report", "cert_chain"}
        assert list(primary["attestation_report"])[:3] == ["version", "guest_svn", "policy"]
        assert primary["cert_chain"] is None
    else:
        assert set(primary) == {"svn", "report_data"}
    assert attest["tee-evidence"]["additional_evidence"] == ""
