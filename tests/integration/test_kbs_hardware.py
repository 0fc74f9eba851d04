"""Hardware evidence through the KBS: a real SEV-SNP report (shared dev vector) replayed from
elsewhere never earns a token.

Changed on purpose (issue 13, item 8): this test used to assert that ``--collateral`` holding
only the VCEK chain enabled the snp verifier (``auth`` 200). That was the insecure behaviour:
without the ARK's CRL and a minimum TCB an SNP report's revocation and TCB cannot be checked, so
such a KBS now refuses ``snp`` and says why at start-up. The binding refusal of real reports is
covered by the verifier's own tests; the collateral rules end to end by test_kbs_collateral.py.
"""

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
        assert r.status_code == 401, r.text  # no CRL, no minimum TCB: snp is not enabled
        assert "not accepted" in r.json()["detail"]
        assert "snp evidence NOT accepted" in kbs.log.read_text()
        _, pub = ec_key()
        quote = base64.b64encode((SNP / "report.bin").read_bytes()).decode()
        r = client.post("/kbs/v0/attest", json={
            "runtime-data": {"nonce": "replayed", "tee-pubkey": pub},
            "tee-evidence": {"primary_evidence": {"quote": quote}, "additional_evidence": ""}})
        assert r.status_code == 401, r.text
        assert r.json()["type"] == PROBLEM + "AttestationError"
        r = client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "sim"})
        assert r.status_code == 401  # no sim root configured: sim refused
