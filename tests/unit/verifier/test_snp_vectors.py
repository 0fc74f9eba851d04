"""Every ``dev/`` SNP case of the shared vectors gives exactly its ``expected.json``, verified
against AMD's real, pinned ARKs at the case's ``verify_at`` instant."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
from typing import Any

import pytest

from arca import errors as E
from arca.verifier.base import Expected
from arca.verifier.snp import AMD_ARK_SPKI_SHA256, SnpVerifier
from arca.verifier.snp.certs import load_amd_cert
from tests.support.snp_factory import MemoryCollateral

VECTORS = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
CASES = sorted((VECTORS / "dev").glob("snp-*")) if (VECTORS / "dev").is_dir() else []
CLAIM_KEYS = ("measurement", "host_data", "policy", "vmpl", "chip_id", "reported_tcb",
              "guest_svn", "report_data", "product", "signing_key", "format_version")

pytestmark = pytest.mark.skipif(not CASES, reason="shared vectors absent")


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def load(case: pathlib.Path) -> tuple[bytes, MemoryCollateral, dict[str, Any]]:
    files = {p.name: p.read_bytes() for p in case.glob("*.pem")}
    return ((case / "report.bin").read_bytes(), MemoryCollateral(files),
            json.loads((case / "expected.json").read_text()))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_dev_case_gives_expected(case: pathlib.Path) -> None:
    report, collateral, exp = load(case)
    assert exp["kind"] == "snp-report"
    verifier = SnpVerifier(collateral)
    if not exp["valid"] or exp["verify_at"] is None:
        with pytest.raises(E.EvidenceError):
            verifier.verify(report, at=instant(exp["verify_at"] or "2030-01-01T00:00:00Z"))
        return
    claims = verifier.verify(report, at=instant(exp["verify_at"])).to_dict()
    for key in CLAIM_KEYS:
        assert claims[key] == exp[key], key
    assert claims["init_data"] == exp["host_data"]
    assert claims["debug"] is bool(int(exp["policy"], 16) >> 19 & 1)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_dev_case_bindings_and_window(case: pathlib.Path) -> None:
    report, collateral, exp = load(case)
    if not exp["valid"]:
        pytest.skip("negative case")
    verifier = SnpVerifier(collateral)
    at = instant(exp["verify_at"])
    verifier.verify(report, at=at, expected=Expected(
        report_data=bytes.fromhex(exp["report_data"]),
        init_data_hash=bytes.fromhex(exp["host_data"])))
    wrong = bytearray.fromhex(exp["report_data"])
    wrong[0] ^= 1
    with pytest.raises(E.BindingMismatch):
        verifier.verify(report, at=at, expected=Expected(report_data=bytes(wrong)))
    after = instant(exp["chain_window"]["not_after"]) + dt.timedelta(seconds=1)
    before = instant(exp["chain_window"]["not_before"]) - dt.timedelta(seconds=1)
    for bad in (after, before):
        with pytest.raises(E.Expired):
            verifier.verify(report, at=bad)


def test_pins_are_those_of_the_roots_folder() -> None:
    roots = VECTORS / "roots"
    for product in ("Milan", "Genoa", "Turin"):
        ark = load_amd_cert((roots / f"amd-{product.lower()}-ark.pem").read_bytes(), "ark")
        assert AMD_ARK_SPKI_SHA256[ark.spki_sha256] == product
        assert ark.common_name == f"ARK-{product}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_dev_case_with_another_products_ark_is_rejected(case: pathlib.Path) -> None:
    report, collateral, exp = load(case)
    other = "genoa" if exp.get("product") == "Milan" else "milan"
    collateral.files["ark.pem"] = (VECTORS / "roots" / f"amd-{other}-ark.pem").read_bytes()
    with pytest.raises(E.ChainInvalid):
        SnpVerifier(collateral).verify(report, at=instant(exp["verify_at"]))
