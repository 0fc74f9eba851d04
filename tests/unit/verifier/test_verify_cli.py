"""``arca verify``: exit 0 valid, 1 invalid with the failed check, 2 usage/unreadable input."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from arca.cli.main import main
from tests.support.snp_factory import build_case

VECTORS = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
SNP_DEV = VECTORS / "dev" / "snp-trustee-1"
TDX_DEV = VECTORS / "dev" / "tdx-dcapqvl-1"
needs_vectors = pytest.mark.skipif(not SNP_DEV.is_dir(), reason="shared vectors absent")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["verify", *args])
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), out, err


def verify_at(case: pathlib.Path) -> str:
    return str(json.loads((case / "expected.json").read_text())["verify_at"])


def as_json(out: str) -> dict[str, Any]:
    result = json.loads(out)
    assert set(result) == {"valid", "tee", "claims", "tcb_status", "error"}
    return result


@needs_vectors
def test_valid_snp_vector_json(capsys: pytest.CaptureFixture[str]) -> None:
    exp = json.loads((SNP_DEV / "expected.json").read_text())
    code, out, _ = run(capsys, str(SNP_DEV / "report.bin"), "--collateral", str(SNP_DEV),
                       "--at", exp["verify_at"], "--report-data", exp["report_data"][:96],
                       "--init-data-hash", exp["host_data"], "--json")
    result = as_json(out)
    assert code == 0 and result["valid"] is True and result["error"] is None
    assert result["tee"] == "snp" and result["tcb_status"] is None
    assert result["claims"]["measurement"] == exp["measurement"]
    assert result["claims"]["product"] == "Milan"


@needs_vectors
def test_valid_snp_vector_human(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(SNP_DEV / "report.bin"), "--tee", "snp", "--collateral",
                       str(SNP_DEV), "--at", verify_at(SNP_DEV))
    assert code == 0 and out.startswith("valid: snp evidence") and "measurement: " in out


@needs_vectors
def test_valid_tdx_vector_reports_tcb_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(TDX_DEV / "quote.bin"), "--collateral", str(TDX_DEV),
                       "--at", verify_at(TDX_DEV), "--json")
    result = as_json(out)
    assert code == 0 and result["tee"] == "tdx" and result["tcb_status"]


@needs_vectors
@pytest.mark.parametrize("extra,check", [
    (["--at", "2040-01-01T00:00:00Z"], "expired: vcek certificate"),
    (["--report-data", "ff"], "binding: report_data"),
    (["--init-data-hash", "ff" * 32], "binding: init_data"),
])
def test_invalid_snp_vector_names_the_check(capsys: pytest.CaptureFixture[str],
                                            extra: list[str], check: str) -> None:
    args = [str(SNP_DEV / "report.bin"), "--collateral", str(SNP_DEV)]
    if "--at" not in extra:
        args += ["--at", verify_at(SNP_DEV)]
    code, out, _ = run(capsys, *args, *extra, "--json")
    result = as_json(out)
    assert code == 1 and result["valid"] is False and result["error"].startswith(check)
    assert result["claims"] == {}
    code, out, _ = run(capsys, *args, *extra)
    assert code == 1 and out.startswith(f"invalid: {check}")


def test_factory_report_is_refused_by_amd_pins(capsys: pytest.CaptureFixture[str],
                                               tmp_path: pathlib.Path) -> None:
    case = build_case("Genoa", 5)
    (tmp_path / "report.bin").write_bytes(case.report)
    for name, data in case.files.items():
        (tmp_path / name).write_bytes(data)
    code, out, _ = run(capsys, str(tmp_path / "report.bin"), "--collateral", str(tmp_path),
                       "--json")
    assert code == 1 and as_json(out)["error"].startswith("root: ")
    (tmp_path / "ark.pem").unlink()
    code, out, _ = run(capsys, str(tmp_path / "report.bin"), "--collateral", str(tmp_path),
                       "--json")
    assert code == 1 and as_json(out)["error"].startswith("collateral: ")


def test_garbage_evidence_is_invalid(capsys: pytest.CaptureFixture[str],
                                     tmp_path: pathlib.Path) -> None:
    f = tmp_path / "ev.bin"
    f.write_bytes(b"not evidence")
    code, out, _ = run(capsys, str(f), "--json")
    assert code == 1 and as_json(out)["error"].startswith("malformed: ")


@pytest.mark.parametrize("args", [
    ["/nonexistent/evidence.bin"],
    ["{report}", "--tee", "sev"],
    ["{report}", "--report-data", "zz"],
    ["{report}", "--at", "yesterday"],
    ["{report}", "--tee", "sim"],  # sim without a trusted root
    ["{report}", "--tee", "snp", "--collateral", "{dir}", "--init-data-hash", "00" * 48],
    ["{report}", "--collateral", "/nonexistent/dir"],
    [],
])
def test_usage_and_unreadable_input_exit_2(capsys: pytest.CaptureFixture[str],
                                           tmp_path: pathlib.Path, args: list[str]) -> None:
    case = build_case()
    (tmp_path / "report.bin").write_bytes(case.report)
    for name, data in case.files.items():
        (tmp_path / name).write_bytes(data)
    args = [a.format(report=tmp_path / "report.bin", dir=tmp_path) for a in args]
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    assert "Traceback" not in err


@needs_vectors
def test_subprocess(tmp_path: pathlib.Path) -> None:
    arca = pathlib.Path(sys.executable).with_name("arca")
    proc = subprocess.run(
        [str(arca), "verify", str(SNP_DEV / "report.bin"), "--collateral", str(SNP_DEV),
         "--at", verify_at(SNP_DEV), "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["valid"] is True
    proc = subprocess.run([str(arca), "verify", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot read evidence" in proc.stderr


DEV_CASES = sorted(p for p in (VECTORS / "dev").glob("*") if p.is_dir()) if VECTORS.is_dir() else []
COMPARED = ("mrenclave", "mrsigner", "mrtd", "rtmr0", "rtmr3", "mrconfigid", "measurement",
            "host_data", "report_data", "fmspc", "chip_id")


@pytest.mark.parametrize("case", DEV_CASES, ids=lambda p: p.name)
def test_every_dev_case_through_the_cli(capsys: pytest.CaptureFixture[str],
                                        case: pathlib.Path) -> None:
    """The CLI reports exactly expected.json: validity (authenticity), TCB status, claims."""
    expected = json.loads((case / "expected.json").read_text())
    evidence = case / ("report.bin" if (case / "report.bin").exists() else "quote.bin")
    code, out, _ = run(capsys, str(evidence), "--collateral", str(case),
                       "--at", expected["verify_at"], "--json")
    result = as_json(out)
    assert result["valid"] is expected["valid"]
    assert result["tcb_status"] == expected.get("tcb_status")
    for key in COMPARED:
        if key in expected:
            assert result["claims"][key] == expected[key], key
    # A quote whose TCB is not listed is authentic but must be rejected (exit 1, reason given).
    if expected.get("tcb_status") == "TcbNotSupported":
        assert code == 1 and "TcbNotSupported" in result["error"]
    elif expected["valid"] and expected.get("collateral_current_at_verify_at", True):
        assert code == 0 and result["error"] is None
