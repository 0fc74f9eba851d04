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
