"""``arca policy generate`` for tdx/snp, applied by the KBS to the real verifiers' claims of
real evidence (../shared/vectors/dev): a policy made from a vector's values releases; one byte
off, a debug guest, an out-of-date TCB or a TCB below the pinned minimum refuses.

The whole KBS runs (HTTP API in-process: auth, attest, admin, resource): the real SNP/TDX
verifier checks signature, chain, collateral and TCB of the recorded evidence at the vector's
``verify_at``. What a recorded vector cannot do is carry *this* session's nonce in its report
data, so :class:`RecordedEvidence` verifies the report against the report data it was
recorded with and hands the KBS the session's instead; nothing else is changed. That the KBS
refuses evidence not bound to the session is tested in
tests/integration/test_kbs_hardware.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import pathlib
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from arca.guest import jwe
from arca.host.policygen import from_values
from arca.kbs.app import create_app
from arca.kbs.config import KbsConfig
from arca.kbs.service import KbsService
from arca.kbs.tokens import make_admin_token
from arca.verifier.base import Claims, Expected, Verifier, VerifierOptions
from arca.verifier.collateral import DirectoryCollateral
from arca.verifier.registry import get_verifier
from arca.verifier.snp.tcbpolicy import MinimumTcb
from arca.verifier.snp.verifier import SnpVerifier
from arca.wire import kbs_protocol as proto
from arca.wire.errors import InvalidInput
from tests.support.kbs import admin_keypair

DEV = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "dev"
pytestmark = pytest.mark.skipif(not DEV.is_dir(), reason="../shared/vectors absent")
RESOURCE = "default/key/app"
SECRET = b"the tenant's key"
TEE_KEY = jwe.generate_key()  # the guest agent's key (X25519)


class RecordedEvidence:
    """The real verifier at the vector's instant, against its recorded report data; the
    claims then carry the session's report data (see the module docstring)."""

    def __init__(self, real: Verifier, at: dt.datetime, recorded: bytes) -> None:
        self.tee, self.real, self.at, self.recorded = real.tee, real, at, recorded

    def verify(self, evidence: bytes, *, expected: Expected = Expected(),
               at: dt.datetime | None = None) -> Claims:
        claims = self.real.verify(evidence, at=self.at, expected=Expected(
            report_data=self.recorded, init_data_hash=expected.init_data_hash))
        assert expected.report_data is not None
        return replace(claims, values={**claims.values,
                                       "report_data": expected.report_data.hex()})


def vector(case: str) -> tuple[dict, bytes]:
    folder = DEV / case
    exp = json.loads((folder / "expected.json").read_text())
    evidence = (folder / ("report.bin" if case.startswith("snp") else "quote.bin")).read_bytes()
    return exp, evidence


def reference(case: str) -> dict[str, str]:
    """What `arca measure` would have computed for this TD: the vector's launch values."""
    exp, _ = vector(case)
    if case.startswith("snp"):
        return {"measurement": exp["measurement"], "init_data": exp["host_data"],
                "policy": exp["policy"]}
    return {k: exp[k] for k in ("mrtd", "rtmr0", "rtmr1", "rtmr2")} | {
        "init_data": exp["mrconfigid"]}


def release(tmp_path: pathlib.Path, case: str, grants: list[dict[str, str]],
            min_tcb: tuple[str, ...] = ()) -> tuple[int, dict | bytes]:
    """Install the generated policy in a fresh KBS, attest with the vector, ask for the key."""
    tee = case.split("-")[0]
    exp, evidence = vector(case)
    gen = from_values(tee, grants, [RESOURCE], min_tcb=min_tcb)
    tmp_path.mkdir(parents=True, exist_ok=True)
    priv, pub = admin_keypair(tmp_path)
    (tmp_path / "data").mkdir(exist_ok=True)
    cfg = KbsConfig(data_dir=str(tmp_path / "data"), admin_public_key=str(pub),
                    insecure_http=True, collateral=str(DEV / case))
    if tee == "snp":
        # The KBS enables SNP only with an explicit minimum TCB (arca.kbs.collateral): the
        # vector's own reported TCB, so the verifier reports UpToDate as a real KBS would.
        tcb = exp["reported_tcb"]
        real: Verifier = SnpVerifier(DirectoryCollateral(str(DEV / case)), min_tcb=MinimumTcb.parse(
            [f"{exp['product']}:" + ",".join(f"{k}={tcb[k]}" for k in
                                             ("bootloader", "tee", "snp", "microcode"))]))
    else:
        real = get_verifier(tee, VerifierOptions(collateral_dir=str(DEV / case)))
    at = dt.datetime.fromisoformat(exp["verify_at"].replace("Z", "+00:00"))
    svc = KbsService(cfg, verifiers={tee: RecordedEvidence(
        real, at, bytes.fromhex(exp["report_data"]))})
    try:
        client = TestClient(create_app(cfg, svc), base_url="http://127.0.0.1")
        admin = {"Authorization": f"Bearer {make_admin_token(priv)}"}
        r = client.post("/kbs/v0/resource-policy", headers=admin, json={
            "policy": base64.b64encode(gen.policy_text.encode()).decode()})
        assert r.status_code == 200, r.text
        for name, values in gen.reference_values().items():
            r = client.post("/kbs/v0/reference-values", headers=admin,
                            json={"name": name, "values": values})
            assert r.status_code == 200, r.text
        r = client.post(f"/kbs/v0/resource/{RESOURCE}", headers=admin, content=SECRET)
        assert r.status_code == 200, r.text
        nonce = client.post("/kbs/v0/auth", json=proto.Request(tee).to_json()).json()["nonce"]
        r = client.post("/kbs/v0/attest", json={
            "runtime-data": {"nonce": nonce, "tee-pubkey": jwe.public_jwk(TEE_KEY)},
            "tee-evidence": {"primary_evidence": {"quote": base64.b64encode(evidence).decode()},
                             "additional_evidence": ""}})
        assert r.status_code == 200, r.text
        r = client.get(f"/kbs/v0/resource/{RESOURCE}")
        if r.status_code == 200:
            return 200, jwe.decrypt(r.json(), TEE_KEY)
        return r.status_code, r.json()
    finally:
        svc.close()


def one_byte_off(value: str) -> str:
    return f"{int(value[:2], 16) ^ 1:02x}{value[2:]}"


# Vectors the verifier finds valid, not debug and (TDX) UpToDate at their instant.
GOOD = ["snp-trustee-1", "tdx-dcapqvl-1", "tdx-dcapqvl-5", "tdx-gotdxguest-2"]


@pytest.mark.parametrize("case", GOOD)
def test_policy_from_the_vectors_values_releases(tmp_path, case):
    assert release(tmp_path, case, [reference(case)]) == (200, SECRET)


@pytest.mark.parametrize("case", GOOD)
def test_one_byte_off_in_any_pinned_claim_refuses(tmp_path, case):
    good = reference(case)
    for i, claim in enumerate(good):
        bad = {**good, claim: one_byte_off(good[claim].removeprefix("0x"))}
        if claim == "policy":
            bad[claim] = "0x" + bad[claim]
        status, body = release(tmp_path / f"{claim}{i}", case, [bad])
        assert status == 403 and isinstance(body, dict), (claim, body)
        assert body["type"].endswith("PolicyDeny"), (claim, body)


def test_tdx_rtmr0_left_open_releases_and_pinned_wrong_refuses(tmp_path):
    case = "tdx-dcapqvl-5"  # its MRCONFIGID is a real init-data hash
    assert reference(case)["init_data"] != "00" * 48
    status, _ = release(tmp_path / "open", case, [{**reference(case), "rtmr0": "*"}])
    assert status == 200
    wrong = {**reference(case), "rtmr0": one_byte_off(reference(case)["rtmr0"])}
    assert release(tmp_path / "wrong", case, [wrong])[0] == 403
    with pytest.raises(InvalidInput, match="not lowercase hex"):
        from_values("tdx", [{**reference(case), "mrtd": "*"}], [RESOURCE])


def test_a_second_grant_does_not_widen_the_first(tmp_path):
    case = "snp-trustee-1"
    other = {**reference(case), "measurement": one_byte_off(reference(case)["measurement"])}
    assert release(tmp_path / "both", case, [other, reference(case)])[0] == 200
    assert release(tmp_path / "other", case, [other])[0] == 403


def test_snp_minimum_tcb(tmp_path):
    case = "snp-trustee-1"  # reported TCB: bootloader 3, tee 0, snp 8, microcode 115
    at_least = ("bootloader=3", "tee=0", "snp=8", "microcode=115")
    assert release(tmp_path / "met", case, [reference(case)], at_least)[0] == 200
    newer = ("bootloader=3", "snp=9")
    assert release(tmp_path / "newer", case, [reference(case)], newer)[0] == 403


@pytest.mark.parametrize(("case", "why"), [
    ("snp-gosevguest-1", "guest policy 0xb0000 allows debugging"),
    ("tdx-trustee-3", "TCB OutOfDate"),
    ("tdx-trustee-1", "debug TD (TD_ATTRIBUTES.DEBUG)"),
])
def test_exact_values_of_a_weak_td_still_refuse(tmp_path, case, why):
    status, body = release(tmp_path, case, [reference(case)])
    assert status == 403, (why, body)
