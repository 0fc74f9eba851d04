"""The KBS replays a TDX guest's CC event log (Trustee's ``{"quote", "cc_eventlog"}``) against
the verified quote's RTMRs (issue 14): the whole KBS in-process with the real TDX verifier on a
real TD's quote (../shared/vectors/dev tdx-gotdxguest-1, at its ``verify_at``) and that TD's
real event log (google/go-eventlog's cos-113-intel-tdx.bin, scripts/tee-fixtures.sh). The log
as recorded is accepted and its claims reach the token; a log with one event changed, another
TD's, a truncated or garbage log is refused with one line naming why."""

from __future__ import annotations

import base64
import json

import pytest
from starlette.testclient import TestClient

from arca.guest import jwe
from arca.kbs.app import create_app
from arca.kbs.config import KbsConfig
from arca.kbs.service import KbsService
from arca.verifier.base import VerifierOptions
from arca.verifier.registry import get_verifier
from arca.wire import kbs_protocol as proto
from tests.support.tee_fixtures import GO_EVENTLOG, fixture
from tests.unit.kbs.test_hardware_policy_vectors import DEV, RecordedEvidence, vector

pytestmark = pytest.mark.skipif(not DEV.is_dir(), reason="../shared/vectors absent")
CASE = "tdx-gotdxguest-1"  # its quote is the one the TD of cos-113-intel-tdx.bin produced
CCEL = GO_EVENTLOG / "testdata/eventlogs/ccel"
COS_SHA256 = "090dc18758380a5cc03014bf2fe354788a4f4222671e1e38f85b772d2fd344b5"


@pytest.fixture(scope="module")
def kbs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import datetime as dt

    exp, _ = vector(CASE)
    tmp = tmp_path_factory.mktemp("ccel")
    cfg = KbsConfig(data_dir=str(tmp), insecure_http=True, collateral=str(DEV / CASE))
    real = get_verifier("tdx", VerifierOptions(collateral_dir=str(DEV / CASE)))
    at = dt.datetime.fromisoformat(exp["verify_at"].replace("Z", "+00:00"))
    svc = KbsService(cfg, verifiers={"tdx": RecordedEvidence(
        real, at, bytes.fromhex(exp["report_data"]))})
    yield TestClient(create_app(cfg, svc), base_url="http://127.0.0.1")
    svc.close()


def attest(client: TestClient, log: bytes | None, aa_log: str | None = None
           ) -> tuple[int, dict]:
    _, quote = vector(CASE)
    nonce = client.post("/kbs/v0/auth", json=proto.Request("tdx").to_json()).json()["nonce"]
    primary = {"quote": base64.b64encode(quote).decode()}
    if log is not None:
        primary["cc_eventlog"] = base64.b64encode(log).decode()
    if aa_log is not None:
        primary["aa_eventlog"] = aa_log
    r = client.post("/kbs/v0/attest", json={
        "runtime-data": {"nonce": nonce, "tee-pubkey": jwe.public_jwk(jwe.generate_key())},
        "tee-evidence": {"primary_evidence": primary, "additional_evidence": ""}})
    if r.status_code != 200:
        return r.status_code, r.json()
    payload = r.json()["token"].split(".")[1]
    ear = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return 200, ear["submods"]["cpu0"]["ear.veraison.annotated-evidence"]


def real_log() -> bytes:
    return fixture(CCEL / "cos-113-intel-tdx.bin", COS_SHA256).read_bytes()


def test_the_tds_own_log_is_replayed_and_its_claims_reach_the_token(kbs) -> None:  # type: ignore[no-untyped-def]
    status, claims = attest(kbs, real_log())
    assert status == 200, claims
    assert claims["ccel"] == {"events": 43}
    assert claims["rtmr0"].startswith("3fa2f61f")


def test_without_a_log_the_quote_alone_decides(kbs) -> None:  # type: ignore[no-untyped-def]
    status, claims = attest(kbs, None)
    assert status == 200 and "ccel" not in claims


def _refusal(kbs, log: bytes | None, aa_log: str | None = None) -> str:  # type: ignore[no-untyped-def]
    status, problem = attest(kbs, log, aa_log)
    assert status == 401, problem
    detail = str(problem["detail"])
    assert "\n" not in detail and "Traceback" not in detail
    return detail


def test_one_changed_event_is_refused(kbs) -> None:  # type: ignore[no-untyped-def]
    from arca.verifier.dcap import ccel

    log = bytearray(real_log())
    tenth = ccel.parse(bytes(log))[9]
    at = bytes(log).index(tenth.sha384)
    log[at] ^= 1  # its digest as the firmware did not extend it
    detail = _refusal(kbs, bytes(log))
    assert "does not replay to the quote's RTMR" in detail, detail


def test_another_tds_log_is_refused(kbs) -> None:  # type: ignore[no-untyped-def]
    other = fixture(CCEL / "cos-113-intel-tdx-dupe-separator.bin").read_bytes()
    detail = _refusal(kbs, other)
    assert "RTMR0" in detail


@pytest.mark.parametrize("cut", [10, 40, 5000])
def test_truncated_logs_are_refused_with_one_line(kbs, cut: int) -> None:  # type: ignore[no-untyped-def]
    detail = _refusal(kbs, real_log()[:cut])
    assert "tdx event log" in detail, detail


def test_garbage_is_refused_with_one_line(kbs) -> None:  # type: ignore[no-untyped-def]
    assert "tdx event log" in _refusal(kbs, b"\x17" * 300)


def test_runtime_events_the_quotes_rtmr3_does_not_hold_are_refused(kbs) -> None:  # type: ignore[no-untyped-def]
    """The AA's events as guest-components' ``read_eventlog`` appends them to the CCEL
    (``attester/src/utils.rs``), and the legacy ``aa_eventlog`` text (Trustee's TdxEvidence
    before 09080e2f): this TD's quote has RTMR3 zero, so any runtime event is refused."""
    from tests.unit.verifier.test_aael import ENTRIES, INIT, aa_event

    log = real_log()
    end = log.index(b"\xff" * 8, 0x4000)
    appended = log[:end] + b"".join(aa_event(t) for t in ENTRIES) + b"\xff" * 8
    assert "RTMR3" in _refusal(kbs, appended)
    assert "RTMR3" in _refusal(kbs, log, INIT + "\nimage-rs PullImage alpine\n")
    assert "RTMR3" in _refusal(kbs, None, INIT + "\n")
    assert "AA event log: the first line" in _refusal(kbs, log, "not a log")
