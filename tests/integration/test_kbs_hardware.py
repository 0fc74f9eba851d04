"""Hardware evidence through the KBS: a real SEV-SNP report (shared dev vector) reaches the snp
verifier via ``--collateral`` and is refused because it is not bound to this session's
runtime-data: real evidence replayed from elsewhere never earns a token."""

from __future__ import annotations

import base64
import pathlib

import httpx
import pytest

from tests.integration.test_kbs_protocol import PROBLEM, ec_key
from tests.support.kbs import running_kbs

pytestmark = pytest.mark.integration
VECTORS = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "dev"
SNP = VECTORS / "snp-gosevguest-1"


@pytest.mark.skipif(not (SNP / "report.bin").exists(), reason="shared vectors absent")
def test_real_snp_report_replayed_is_refused(tmp_path):
    with running_kbs(tmp_path / "data", "--collateral", str(SNP)) as kbs:
        client = httpx.Client(base_url=kbs.url)
        r = client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"})
        assert r.status_code == 200, r.text  # the snp verifier was built at start-up
        _, pub = ec_key()
        quote = base64.b64encode((SNP / "report.bin").read_bytes()).decode()
        r = client.post("/kbs/v0/attest", json={
            "runtime-data": {"nonce": r.json()["nonce"], "tee-pubkey": pub},
            "tee-evidence": {"primary_evidence": {"quote": quote}, "additional_evidence": ""}})
        assert r.status_code == 401, r.text
        assert r.json()["type"] == PROBLEM + "AttestationError"
        assert "binding" in r.json()["detail"]
        r = client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "sim"})
        assert r.status_code == 401  # no sim root configured: sim refused
