"""Property tests: random bytes and single-byte mutations of real and factory SNP evidence
never raise anything but Arca errors, and any change to the signed region is rejected."""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arca.errors import ArcaError, MalformedEvidence
from arca.verifier.snp import SnpReport, SnpVerifier
from arca.verifier.snp.certs import load_amd_cert
from arca.verifier.snp.certtable import join_evidence, split_evidence
from arca.verifier.snp.report import REPORT_SIZE, SIGNED_SIZE
from tests.support.snp_factory import NOW, MemoryCollateral, build_case

VECTORS = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
DEV = VECTORS / "dev" / "snp-trustee-1"

FUZZ = settings(max_examples=int(os.environ.get("SNP_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


Target = tuple[bytes, SnpVerifier, dt.datetime, dict[str, object]]


def _factory_target() -> Target:
    case = build_case("Genoa", 5)
    v = SnpVerifier(case.collateral(), pinned_arks=case.pins)
    return case.report, v, NOW, v.verify(case.report, at=NOW).to_dict()


def _dev_target() -> Target:
    exp = json.loads((DEV / "expected.json").read_text())
    at = dt.datetime.fromisoformat(exp["verify_at"].replace("Z", "+00:00"))
    v = SnpVerifier(MemoryCollateral({p.name: p.read_bytes() for p in DEV.glob("*.pem")}))
    report = (DEV / "report.bin").read_bytes()
    return report, v, at, v.verify(report, at=at).to_dict()


TARGETS = {"factory": _factory_target}
if DEV.is_dir():
    TARGETS["dev"] = _dev_target
_cache: dict[str, Target] = {}


def _target(name: str) -> Target:
    if name not in _cache:
        _cache[name] = TARGETS[name]()
    return _cache[name]


@given(st.binary(min_size=0, max_size=2 * REPORT_SIZE))
@FUZZ
def test_random_bytes_parse_or_raise_malformed(data: bytes) -> None:
    try:
        SnpReport.from_bytes(data)
    except MalformedEvidence:
        pass


@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
@FUZZ
def test_random_reports_are_rejected_with_arca_errors(data: bytes) -> None:
    _, verifier, at, _ = _target("factory")
    with pytest.raises(ArcaError):
        verifier.verify(data, at=at)


@pytest.mark.parametrize("name", sorted(TARGETS))
@given(pos=st.integers(0, REPORT_SIZE - 1), delta=st.integers(1, 255))
@FUZZ
def test_single_byte_mutation(name: str, pos: int, delta: int) -> None:
    report, verifier, at, claims = _target(name)
    data = bytearray(report)
    data[pos] = (data[pos] + delta) % 256
    if pos < SIGNED_SIZE:
        with pytest.raises(ArcaError):
            verifier.verify(bytes(data), at=at)
        return
    # Outside the signed region: the signature scalars are checked, the reserved tail of the
    # signature structure carries nothing; either way claims can never change.
    try:
        assert verifier.verify(bytes(data), at=at).to_dict() == claims
    except ArcaError:
        pass


@given(st.binary(max_size=3000))
@FUZZ
def test_random_certificates_raise_only_arca_errors(data: bytes) -> None:
    try:
        load_amd_cert(data, "vcek")
    except ArcaError:
        pass


@given(pos=st.integers(0, 10_000), delta=st.integers(1, 255))
@FUZZ
def test_mutated_vcek_is_rejected_or_harmless(pos: int, delta: int) -> None:
    case = build_case()
    der = load_amd_cert(case.files["vcek.pem"], "vcek").der
    pos %= len(der)
    mutated = bytearray(der)
    mutated[pos] = (mutated[pos] + delta) % 256
    case.files["vcek.pem"] = bytes(mutated)
    v = SnpVerifier(case.collateral(), pinned_arks=case.pins)
    # The VCEK is signed over all but its outer framing and signature: any mutation must fail.
    with pytest.raises(ArcaError):
        v.verify(case.report, at=NOW)


_ext: dict[str, tuple[bytes, SnpVerifier, dict[str, object]]] = {}


def _extended() -> tuple[bytes, SnpVerifier, dict[str, object]]:
    if not _ext:
        case = build_case("Milan", 3)
        der = {n: load_amd_cert(p, n).der for n, p in case.files.items()}
        evidence = join_evidence(case.report, der)
        v = SnpVerifier(None, pinned_arks=case.pins)
        _ext["x"] = (evidence, v, v.verify(evidence, at=NOW).to_dict())
    return _ext["x"]


@given(st.binary(max_size=512))
@FUZZ
def test_random_certificate_tables_raise_only_arca_errors(table: bytes) -> None:
    _, verifier, at, _ = _target("factory")
    report = _target("factory")[0]
    try:
        split_evidence(report + table)
        verifier.verify(report + table, at=at)
    except ArcaError:
        pass


@given(pos=st.integers(0, 10_000), delta=st.integers(1, 255))
@FUZZ
def test_mutated_certificate_table_is_rejected_or_harmless(pos: int, delta: int) -> None:
    evidence, verifier, claims = _extended()
    pos = REPORT_SIZE + pos % (len(evidence) - REPORT_SIZE)
    data = bytearray(evidence)
    data[pos] = (data[pos] + delta) % 256
    try:
        assert verifier.verify(bytes(data), at=NOW).to_dict() == claims
    except ArcaError:
        pass


@given(body=st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE), version=st.integers(2, 5),
       key=st.sampled_from([0, 1, 7]))
@FUZZ
def test_plausible_random_reports_are_rejected(body: bytes, version: int, key: int) -> None:
    """Random reports with a valid header get past the parser and must still be refused."""
    _, verifier, at, _ = _target("factory")
    data = bytearray(body)
    data[0:4] = version.to_bytes(4, "little")
    data[0x34:0x38] = (1).to_bytes(4, "little")
    data[0x48:0x4C] = (key << 2).to_bytes(4, "little")
    data[0x2A0 + 48 : 0x2E8] = bytes(24)
    data[0x2E8 + 48 : 0x330] = bytes(24)
    with pytest.raises(ArcaError):
        verifier.verify(bytes(data), at=at)
