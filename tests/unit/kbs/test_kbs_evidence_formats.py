"""Evidence as CoCo guests send it (``arca.kbs.evidence_formats``).

Upstream behaviour reproduced, per test:

* report data: Trustee ``kbs/src/attestation/backend.rs`` (runtime data with
  ``additional-evidence``), guest-components ``attestation-agent/kbs_protocol/src/client/
  rcar_client.rs`` (the same hashed form), Trustee ``deps/verifier/src/lib.rs``
  ``regularize_data`` (zero-pad for tdx/snp/sgx) and ``deps/verifier/src/sample/mod.rs``
  (exact compare);
* SNP: guest-components ``attestation-agent/attester/src/snp/mod.rs`` ``SnpEvidence`` with
  the ``sev`` crate 6.x ``AttestationReport``/``CertTableEntry`` serde forms
  (``src/firmware/guest/types/snp.rs``, ``src/firmware/host/types/snp.rs``), read by Trustee's
  ``deps/verifier/src/snp/mod.rs``;
* TDX/SGX: guest-components ``attester/src/tdx/mod.rs`` ``TdxEvidence`` and
  ``attester/src/sgx_dcap/mod.rs`` ``SgxDcapAttesterEvidence``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import pathlib
import ssl

import pytest

from arca.errors import MalformedEvidence, SignatureInvalid
from arca.kbs.evidence import evidence_bytes
from arca.kbs.evidence_formats import (
    SNP_FIELDS,
    quote_bytes,
    report_data_candidates,
    snp_evidence_bytes,
    snp_report_from_json,
    snp_report_to_json,
)
from arca.verifier.collateral import DirectoryCollateral
from arca.verifier.snp.certtable import split_evidence
from arca.verifier.snp.verifier import SnpVerifier
from arca.wire.jcs import canonicalize

VECTORS = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "dev"
SNP_VECTORS = sorted(p for p in VECTORS.glob("snp-*") if (p / "report.bin").exists())
needs_vectors = pytest.mark.skipif(not SNP_VECTORS, reason="shared vectors absent")
RD = {"nonce": "bm9uY2U=", "tee-pubkey": {"kty": "EC", "crv": "P-256",
                                          "alg": "ECDH-ES+A256KW", "x": "a", "y": "b"}}


# -- report data ------------------------------------------------------------------------------
def test_report_data_trustee_form_first_then_legacy():
    trustee = hashlib.sha384(canonicalize({**RD, "additional-evidence": ""})).digest()
    legacy = hashlib.sha384(canonicalize(RD)).digest()
    for tee in ("tdx", "snp", "sgx", "sim"):
        assert report_data_candidates(tee, RD, "") == [trustee + bytes(16), legacy + bytes(16)]
    assert report_data_candidates("sim", RD, "", legacy_first=True)[0] == legacy + bytes(16)
    # sample: the raw 48-byte digest compared exactly (Trustee), or padded (Arca's sample)
    assert report_data_candidates("sample", RD, "") == [trustee, trustee + bytes(16),
                                                        legacy, legacy + bytes(16)]


def test_report_data_with_device_evidence_binds_it_only_in_the_new_form():
    extra = json.dumps({"sampledevice": {"svn": "1"}})
    want = hashlib.sha384(canonicalize({**RD, "additional-evidence": extra})).digest()
    assert report_data_candidates("tdx", RD, extra) == [want + bytes(16)]


# -- SNP: the sev crate's JSON ----------------------------------------------------------------
def _certs_as_sev_entries(vector: pathlib.Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for name, kind in (("vcek.pem", "VCEK"), ("vlek.pem", "VLEK"), ("ask.pem", "ASK"),
                       ("ark.pem", "ARK")):
        if (vector / name).exists():
            der = ssl.PEM_cert_to_DER_cert((vector / name).read_text())
            out.append({"cert_type": kind, "data": list(der)})
    return out


@needs_vectors
@pytest.mark.parametrize("vector", SNP_VECTORS, ids=lambda p: p.name)
def test_snp_report_json_round_trip_is_byte_exact(vector):
    raw = (vector / "report.bin").read_bytes()
    doc = snp_report_to_json(raw)
    assert list(doc) == [name for name, _, _ in SNP_FIELDS]  # serde field order
    assert all(isinstance(b, int) for b in doc["report_data"]) and len(doc["chip_id"]) == 64
    assert set(doc["current_tcb"]) == {"fmc", "bootloader", "tee", "snp", "microcode"}
    assert set(doc["signature"]) == {"r", "s"} and len(doc["signature"]["r"]) == 72
    assert snp_report_from_json(doc) == raw
    # a different field order and whitespace change nothing (JSON objects are unordered)
    shuffled = json.loads(json.dumps(dict(reversed(list(doc.items()))), indent=3))
    assert snp_report_from_json(shuffled) == raw


@needs_vectors
@pytest.mark.parametrize("vector", SNP_VECTORS, ids=lambda p: p.name)
def test_snp_structured_evidence_verifies_with_carried_chain(vector):
    expected = json.loads((vector / "expected.json").read_text())
    at = dt.datetime.fromisoformat(expected["verify_at"].replace("Z", "+00:00"))
    raw = (vector / "report.bin").read_bytes()
    primary = {"attestation_report": snp_report_to_json(raw),
               "cert_chain": _certs_as_sev_entries(vector)}
    # as it travels: JSON text, re-parsed
    evidence = evidence_bytes("snp", json.loads(json.dumps(primary)))
    report, carried = split_evidence(evidence)
    assert report == raw and set(carried) >= {"ark.pem"}
    claims = SnpVerifier().verify(evidence, at=at)
    assert claims.values["measurement"] == expected["measurement"]
    assert claims.values["report_data"] == expected["report_data"]
    # the table in another order (ARK first, as some hosts write it) verifies the same
    flipped = {**primary, "cert_chain": list(reversed(primary["cert_chain"]))}
    assert SnpVerifier().verify(evidence_bytes("snp", flipped), at=at).values == claims.values
    # without cert_chain (null, as guest-components sends when the host has none): collateral
    bare = evidence_bytes("snp", {"attestation_report": primary["attestation_report"],
                                  "cert_chain": None})
    assert bare == raw
    assert SnpVerifier(DirectoryCollateral(str(vector))).verify(bare, at=at).values[
        "measurement"] == expected["measurement"]


@needs_vectors
def test_snp_structured_evidence_tampered_is_refused():
    vector = SNP_VECTORS[0]
    expected = json.loads((vector / "expected.json").read_text())
    at = dt.datetime.fromisoformat(expected["verify_at"].replace("Z", "+00:00"))
    doc = snp_report_to_json((vector / "report.bin").read_bytes())
    doc["guest_svn"] ^= 1
    with pytest.raises(SignatureInvalid):
        SnpVerifier(DirectoryCollateral(str(vector))).verify(
            evidence_bytes("snp", {"attestation_report": doc}), at=at)


def _doc() -> dict[str, object]:
    raw = bytearray(0x4A0)
    raw[0] = 3  # version 3, Milan (family 19h model 01h)
    raw[0x188], raw[0x189] = 0x19, 0x01
    return snp_report_to_json(bytes(raw))


@pytest.mark.parametrize("defect", [
    "unknown_field", "missing_field", "short_array", "byte_out_of_range", "bool_as_int",
    "v3_without_cpuid", "v2_with_cpuid", "turin_tcb_on_milan", "version_6", "signature_extra",
])
def test_snp_report_json_defects_are_refused(defect):
    doc = _doc()
    if defect == "unknown_field":
        doc["reserved"] = 0
    elif defect == "missing_field":
        del doc["measurement"]
    elif defect == "short_array":
        doc["report_data"] = [0] * 63
    elif defect == "byte_out_of_range":
        doc["host_data"] = [256] + [0] * 31
    elif defect == "bool_as_int":
        doc["vmpl"] = True
    elif defect == "v3_without_cpuid":
        doc["cpuid_fam_id"] = None
    elif defect == "v2_with_cpuid":
        doc["version"] = 2
    elif defect == "turin_tcb_on_milan":
        doc["launch_tcb"] = {**doc["launch_tcb"], "fmc": 1}  # type: ignore[dict-item]
    elif defect == "version_6":
        doc["version"] = 6
    elif defect == "signature_extra":
        doc["signature"] = {**doc["signature"], "reserved": []}  # type: ignore[dict-item]
    with pytest.raises(MalformedEvidence):
        snp_report_from_json(doc)


@pytest.mark.parametrize("chain,what", [
    ([{"cert_type": "VCEK", "data": [1]}, {"cert_type": "VCEK", "data": [2]}], "twice"),
    ([{"cert_type": "PCK", "data": [1]}], "cert_type"),
    ([{"cert_type": {"OTHER": "not-a-uuid"}, "data": [1]}], "UUID"),
    ([{"cert_type": "ARK", "data": []}], "empty"),
    ([{"cert_type": "ARK", "data": [1], "x": 1}], "unknown"),
    ([{"cert_type": "ARK", "data": [1]}] * 17, "at most"),
    ("VCEK", "list"),
])
def test_snp_cert_chain_defects_are_refused(chain, what):
    with pytest.raises(MalformedEvidence, match=what):
        snp_evidence_bytes({"attestation_report": _doc(), "cert_chain": chain})


def test_snp_cert_chain_other_and_crl_entries_are_carried_not_used():
    other = {"cert_type": {"OTHER": "4b5f2f2e-1c41-4a63-8cfc-9e7bb5d8d3d6"}, "data": [1, 2]}
    out = snp_evidence_bytes({"attestation_report": _doc(),
                              "cert_chain": [other, {"cert_type": "CRL", "data": [3]}]})
    assert out == snp_report_from_json(_doc())


# -- TDX / SGX --------------------------------------------------------------------------------
def test_tdx_evidence_with_event_log_field():
    quote = base64.b64encode(b"quote-bytes").decode()
    log = base64.b64encode(b"ccel").decode()
    assert evidence_bytes("tdx", {"cc_eventlog": log, "quote": quote}) == b"quote-bytes"
    assert evidence_bytes("tdx", {"cc_eventlog": None, "quote": quote}) == b"quote-bytes"
    # Trustee's TdxEvidence of mid-2024 to mid-2025 carried the AA's text log beside the CCEL
    assert evidence_bytes("tdx", {"cc_eventlog": log, "quote": quote,
                                  "aa_eventlog": "INIT sha384/00\n"}) == b"quote-bytes"
    assert evidence_bytes("sgx", {"quote": quote}) == b"quote-bytes"
    for tee, bad in (("tdx", {"cc_eventlog": "!", "quote": quote}),
                     ("tdx", {"quote": quote, "aa_eventlog": 7}),  # legacy: a text log
                     ("tdx", {"quote": quote, "aa_eventlog": "x" * 600_000}),
                     ("tdx", {"quote": quote, "eventlog": log}),
                     ("sgx", {"cc_eventlog": log, "quote": quote}),
                     ("tdx", {"cc_eventlog": log, "quote": ""}),
                     ("snp", {"quote": quote, "cert_chain": None})):
        with pytest.raises(MalformedEvidence):
            evidence_bytes(tee, bad)
    with pytest.raises(MalformedEvidence):
        quote_bytes("tdx", {"quote": "A" * 100}, 10)
