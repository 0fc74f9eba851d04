"""``arca verify`` on what a TD holds: ``/run/arca/evidence.json`` as the agent writes it
(``arca.guest.evidence.evidence_document``), and text output for people (no ``None``,
``False`` or ``True``)."""

from __future__ import annotations

import json
import os
import pathlib
import re

import pytest

from arca.cli.main import main
from arca.guest.evidence import evidence_document
from tests.support.kbs import SimAuthority

VECTORS = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "dev"
TDX = VECTORS / "tdx-dcapqvl-1"
PYTHON_WORDS = re.compile(r"\b(None|True|False)\b")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(["verify", *args])
    out, _ = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), out


def test_sim_evidence_json_as_the_agent_writes_it(tmp_path, capsys):
    sim = SimAuthority()
    (tmp_path / "root.pem").write_bytes(sim.root_pem)
    rd = os.urandom(64)
    doc = tmp_path / "evidence.json"
    doc.write_bytes(evidence_document("sim", rd, sim.evidence(rd),
                                      {"nonce": "n", "tee-pubkey": {"kty": "OKP"}}))
    code, out = run(capsys, str(doc), "--sim-root", str(tmp_path / "root.pem"))
    assert code == 0, out
    assert out.startswith("valid: sim evidence") and f"report_data: {rd.hex()}" in out
    assert "debug: no" in out and "tcb_status: not reported" in out
    assert "note: report data checked against the value the evidence document" in out
    assert not PYTHON_WORDS.search(out), out
    # your own expected value is used instead of the document's
    code, out = run(capsys, str(doc), "--sim-root", str(tmp_path / "root.pem"),
                    "--report-data", "00" * 64)
    assert code == 1 and "report_data" in out
    # a document whose stated report data is not the evidence's: refused
    other = json.loads(doc.read_text())
    other["report_data"] = "11" * 64
    doc.write_text(json.dumps(other))
    code, out = run(capsys, str(doc), "--sim-root", str(tmp_path / "root.pem"))
    assert code == 1 and out.startswith("invalid:")
    # --tee must agree with the document
    code, out = run(capsys, str(doc), "--tee", "tdx")
    assert code == 2


@pytest.mark.skipif(not (TDX / "quote.bin").exists(), reason="shared vectors absent")
def test_tdx_quote_in_an_evidence_document(tmp_path, capsys):
    exp = json.loads((TDX / "expected.json").read_text())
    quote = (TDX / "quote.bin").read_bytes()
    doc = tmp_path / "evidence.json"
    rd = bytes.fromhex(exp["claims"]["report_data"]) if "claims" in exp and \
        "report_data" in exp["claims"] else quote[568:632]
    doc.write_bytes(evidence_document("tdx", rd, quote))
    code, out = run(capsys, str(doc), "--collateral", str(TDX), "--at", exp["verify_at"])
    assert out.startswith("valid: tdx evidence"), out
    assert not PYTHON_WORDS.search(out), out
    raw = tmp_path / "quote.bin"
    raw.write_bytes(quote)
    code2, out2 = run(capsys, str(raw), "--collateral", str(TDX), "--at", exp["verify_at"])
    assert code2 == code and out2.splitlines()[0] == out.splitlines()[0]


@pytest.mark.parametrize("body", [b'{"tee": "sim", "evidence": "!!"}',
                                  b'{"tee": "sim", "evidence": "", "report_data": "zz"}'])
def test_broken_evidence_document_is_one_line(tmp_path, capsys, body):
    doc = tmp_path / "evidence.json"
    doc.write_bytes(body)
    with pytest.raises(SystemExit) as info:
        main(["verify", str(doc)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "evidence document" in err and "Traceback" not in err


SNP = VECTORS / "snp-trustee-1"


@pytest.mark.skipif(not (SNP / "report.bin").exists() or not (TDX / "quote.bin").exists(),
                    reason="shared vectors absent")
def test_coco_attester_json_evidence(tmp_path, capsys):
    """What guest-components' attesters print (``attester/src/snp/mod.rs`` SnpEvidence,
    ``attester/src/tdx/mod.rs`` TdxEvidence) verifies like the raw report or quote."""
    import base64
    import ssl

    from arca.kbs.evidence_formats import snp_report_to_json

    exp = json.loads((SNP / "expected.json").read_text())
    der = ssl.PEM_cert_to_DER_cert((SNP / "vcek.pem").read_text())
    snp = tmp_path / "snp.json"
    snp.write_text(json.dumps({"attestation_report": snp_report_to_json(
        (SNP / "report.bin").read_bytes()), "cert_chain": [{"cert_type": "VCEK",
                                                             "data": list(der)}]}))
    code, out = run(capsys, str(snp), "--collateral", str(SNP), "--at", exp["verify_at"])
    assert code == 0 and out.startswith("valid: snp evidence"), out
    assert f"measurement: {exp['measurement']}" in out
    texp = json.loads((TDX / "expected.json").read_text())
    tdx = tmp_path / "tdx.json"
    tdx.write_text(json.dumps({"cc_eventlog": None, "quote": base64.b64encode(
        (TDX / "quote.bin").read_bytes()).decode()}))
    _, out = run(capsys, str(tdx), "--collateral", str(TDX), "--at", texp["verify_at"])
    assert out.startswith("valid: tdx evidence"), out
    snp.write_text(json.dumps({"attestation_report": {"version": 2}}))
    with pytest.raises(SystemExit) as info:
        main(["verify", str(snp)])
    assert info.value.code == 2 and "CoCo evidence document" in capsys.readouterr().err


EVENTLOG_CASE = VECTORS / "tdx-gotdxguest-1"  # the quote of the TD of go-eventlog's cos-113 log


@pytest.mark.skipif(not (EVENTLOG_CASE / "quote.bin").exists(), reason="shared vectors absent")
def test_tdx_event_logs_are_replayed_as_the_kbs_does(tmp_path, capsys):
    """Trustee's TdxEvidence (``deps/verifier/src/tdx/mod.rs``) with the TD's real CCEL: the
    same replay as the KBS (``evidence_formats.event_log_claims``), in text and JSON; a log
    that does not replay (another TD's, runtime events RTMR3 does not hold) exits 1."""
    import base64

    from tests.support.tee_fixtures import GO_EVENTLOG, fixture
    from tests.unit.verifier.test_aael import ENTRIES, INIT, aa_event
    from tests.unit.verifier.test_ccel import COS_SHA256

    ccel_dir = GO_EVENTLOG / "testdata/eventlogs/ccel"
    log = fixture(ccel_dir / "cos-113-intel-tdx.bin", COS_SHA256).read_bytes()
    at = json.loads((EVENTLOG_CASE / "expected.json").read_text())["verify_at"]
    quote = base64.b64encode((EVENTLOG_CASE / "quote.bin").read_bytes()).decode()
    doc = tmp_path / "evidence.json"

    def verify(cc: bytes | None, *extra: str, aa: str | None = None) -> tuple[int, str]:
        body: dict[str, object] = {"quote": quote, "cc_eventlog": None if cc is None else
                                   base64.b64encode(cc).decode()}
        if aa is not None:
            body["aa_eventlog"] = aa
        doc.write_text(json.dumps(body))
        return run(capsys, str(doc), "--collateral", str(EVENTLOG_CASE), "--at", at, *extra)

    code, out = verify(log)
    assert code == 0, out
    assert "event log: replays to the quote's RTMRs (43 events)" in out
    assert not PYTHON_WORDS.search(out), out
    code, out = verify(log, "--json")
    result = json.loads(out)
    assert code == 0 and result["event_log"] == {"replayed": True, "events": 43}
    code, out = verify(None)
    assert code == 0 and "event log: none sent" in out

    other = fixture(ccel_dir / "cos-113-intel-tdx-dupe-separator.bin").read_bytes()
    code, out = verify(other)
    assert code == 1 and out.startswith("valid: tdx evidence"), out
    assert "rejected: event log: binding: tdx event log does not replay to the quote's " \
        "RTMR0" in out
    end = log.index(b"\xff" * 8, 0x4000)
    code, out = verify(log[:end] + aa_event(ENTRIES[0]) + b"\xff" * 8, "--json")
    result = json.loads(out)
    assert code == 1 and result["event_log"]["replayed"] is False
    assert "RTMR3" in result["error"] and result["valid"] is True  # authentic, rejected
    code, out = verify(log, aa=INIT + "\n")
    assert code == 1 and "RTMR3" in out
    code, out = verify(log[:5000])
    assert code == 1 and "tdx event log: truncated" in out


def test_runtime_events_are_printed_for_people():
    from arca.cli.verify_cmd import _event_log_lines
    from arca.verifier.dcap import ccel
    from tests.unit.verifier.test_aael import ENTRIES, aa_only_log, rtmr3_of
    from tests.unit.verifier.test_ccel import claims_of

    got = ccel.verify(aa_only_log(), claims_of([bytes(48)] * 3 + [rtmr3_of(ENTRIES)]))
    lines = _event_log_lines({"replayed": True, **got})
    assert lines[0] == "event log: replays to the quote's RTMRs (3 events)"
    assert lines[2] == ('  runtime event (RTMR3): kata-agent CreateContainer '
                        '{"id": "c1", "image": "alpine"}')
