"""The verifier registry: construction at start-up, TEE detection, one-call verification."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.errors import ConfigError, MalformedEvidence
from arca.host.simtee.platform import evidence_bytes
from arca.verifier.base import Expected, Verifier, VerifierOptions
from arca.verifier.registry import (
    FACTORIES,
    build_verifiers,
    detect_tee,
    get_verifier,
    verify_evidence,
)
from arca.wire.simreport import SimEvidence
from tests.support.dcap_factory import DcapFactory
from tests.support.snp_factory import NOW, build_case

VECTORS = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
DEV = sorted((VECTORS / "dev").iterdir()) if (VECTORS / "dev").is_dir() else []


def test_registry_is_a_plain_mapping_of_the_four_tees() -> None:
    assert set(FACTORIES) == {"sgx", "tdx", "snp", "sim"}


@pytest.mark.parametrize("tee", ["sgx", "tdx", "snp"])
def test_vendor_verifiers_build_without_configuration(tee: str) -> None:
    v = get_verifier(tee)
    assert isinstance(v, Verifier) and v.tee == tee


def test_build_verifiers_constructs_all_at_start_up(tmp_path: pathlib.Path) -> None:
    built = build_verifiers(["sgx", "tdx", "snp"], VerifierOptions(collateral_dir=str(tmp_path)))
    assert {t: v.tee for t, v in built.items()} == {"sgx": "sgx", "tdx": "tdx", "snp": "snp"}


@pytest.mark.parametrize("tee,options", [
    ("sev", VerifierOptions()),
    ("sim", VerifierOptions()),  # no trusted sim root: refused at construction
    ("snp", VerifierOptions(extra={"snp_pinned_arks": {"00" * 32: "Zen"}})),
    ("snp", VerifierOptions(collateral_dir="/nonexistent/arca-collateral")),
    ("tdx", VerifierOptions(collateral_dir="/nonexistent/arca-collateral")),
])
def test_unconstructible_backends_fail_at_start_up(tee: str, options: VerifierOptions) -> None:
    with pytest.raises(ConfigError):
        build_verifiers(["snp", tee], options)


def test_detects_snp_reports_of_every_version() -> None:
    for product, version in [("Milan", 2), ("Genoa", 3), ("Turin", 5)]:
        assert detect_tee(build_case(product, version).report) == "snp"


@pytest.mark.parametrize("tee,version", [("sgx", 3), ("sgx", 4), ("tdx", 4), ("tdx", 5)])
def test_detects_dcap_quotes(tee: str, version: int) -> None:
    bundle = DcapFactory().build(tee=tee, version=version, td15=version == 5 and tee == "tdx")
    assert detect_tee(bundle.quote) == tee


def test_detects_sim_evidence() -> None:
    ev = evidence_bytes(SimEvidence(b"{}", b"sig", ("-----BEGIN CERTIFICATE-----",)))
    assert detect_tee(ev) == "sim"


@pytest.mark.parametrize("data", [
    b"", b"{}", b'{"report": 1}', b"\x00" * 1184, b"\x07" + b"\x00" * 1183,
    b"\x04\x00\x03\x00\x81" + b"\x00" * 60,  # DCAP v4 with attestation key type 3
    b"\x04\x00\x02\x00\x42" + b"\x00" * 60,  # unknown TEE type
])
def test_unknown_evidence_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        detect_tee(data)


@pytest.mark.parametrize("case", DEV, ids=[c.name for c in DEV])
def test_detects_every_dev_vector(case: pathlib.Path) -> None:
    kind = json.loads((case / "expected.json").read_text())["kind"].split("-")[0]
    evidence = case / ("report.bin" if kind == "snp" else "quote.bin")
    assert detect_tee(evidence.read_bytes()) == kind


@given(st.binary(max_size=2048))
@settings(max_examples=300, deadline=None)
def test_detection_of_random_bytes_is_total(data: bytes) -> None:
    try:
        assert detect_tee(data) in FACTORIES
    except MalformedEvidence:
        pass


def test_verify_evidence_detects_builds_and_verifies(tmp_path: pathlib.Path) -> None:
    case = build_case("Genoa", 3)
    for name, data in case.files.items():
        (tmp_path / name).write_bytes(data)
    options = VerifierOptions(collateral_dir=str(tmp_path),
                              extra={"snp_pinned_arks": case.pins})
    claims = verify_evidence(case.report, options=options, at=NOW,
                             expected=Expected(report_data=case.fields.report_data))
    assert claims.tee == "snp" and claims.values["product"] == "Genoa"


def test_online_snp_verifier_is_built_with_its_disk_cache(tmp_path: pathlib.Path) -> None:
    options = VerifierOptions(online=True, cache_dir=str(tmp_path / "cache"),
                              extra={"kds_url": "http://127.0.0.1:9"})
    assert get_verifier("snp", options).tee == "snp"
    assert (tmp_path / "cache").is_dir()
