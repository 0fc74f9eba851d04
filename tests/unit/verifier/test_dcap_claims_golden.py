"""Claims of factory-built quotes serialize to the golden JSON (one shape per DCAP format).

Regenerate after an intended change with ``ARCA_UPDATE_GOLDEN=1 pytest <this file>``.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from arca.verifier.base import Expected
from tests.support.dcap_factory import DcapFactory

GOLDEN = pathlib.Path(__file__).parent / "golden"


@pytest.mark.parametrize(("name", "fmt"), [
    ("dcap_sgx_v3", {"tee": "sgx"}),
    ("dcap_tdx_v4", {"tee": "tdx"}),
    ("dcap_tdx_v5_td15", {"tee": "tdx", "td15": True}),
])
def test_claims_match_golden(name: str, fmt: dict) -> None:
    rd = bytes(range(64))
    b = DcapFactory().build(**fmt, report_data=rd, init_data=b"\xab" * 32 + bytes(
        32 if fmt["tee"] == "sgx" else 16))
    claims = b.verifier().verify(b.quote, at=b.at, expected=Expected(report_data=rd))
    got = json.dumps(claims.to_dict(), indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"{name}.json"
    if os.environ.get("ARCA_UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()
