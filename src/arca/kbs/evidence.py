"""Which verifier handles which TEE at this KBS, and how ``tee-evidence`` becomes bytes.

* ``sample``: CoCo's unsigned test evidence ``{"svn", "report_data"}`` (verified here; it proves
  nothing, so it is enabled only by ``--insecure-allow-sample``).
* ``sim``: Arca's signed simulated evidence, enabled only with ``--trust-sim-root``.
* ``sgx``/``tdx``/``snp``: only when every collateral check can run (:mod:`arca.kbs.collateral`).

``primary_evidence`` is a JSON value: for ``sim``/``sample`` the evidence document itself; for
the hardware TEEs ``{"quote": "<base64 of the raw quote/report>"}`` or Trustee's structured
forms (``tdx`` ``{"quote", "cc_eventlog"}``, ``snp`` ``{"attestation_report", "cert_chain"}``;
:mod:`arca.kbs.evidence_formats`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import importlib
import json
import logging
import pathlib
from typing import Any

from arca.errors import BindingMismatch, ConfigError, MalformedEvidence
from arca.kbs import evidence_formats as formats
from arca.kbs.collateral import hardware_verifiers
from arca.kbs.config import KbsConfig
from arca.verifier.base import Claims, Expected, Verifier
from arca.wire import tees

log = logging.getLogger("arca.kbs")

# Views of the table of TEE facts (arca.wire.tees), the one place these are defined.
#: Report-data field size per TEE.
REPORT_DATA_FIELD = {n: t.report_data_size for n, t in tees.TEES.items()}
#: Init-data field size per TEE: TDX MRCONFIGID 48, SNP HOST_DATA 32, SGX CONFIGID 64, ...
INIT_DATA_FIELD = {n: t.init_data_size for n, t in tees.TEES.items()}
HARDWARE_TEES = tees.HARDWARE_TEES
#: Sizes of ``sample`` report data: the raw SHA-384 (guest-components
#: ``attester/src/sample/mod.rs``) or zero-padded to 64 (Arca's sample evidence).
SAMPLE_REPORT_DATA_SIZES = (48, 64)
#: Evidence larger than this is refused before decoding (a TDX quote with chain is ~10 KiB).
MAX_EVIDENCE_BYTES = 256 * 1024


class SampleVerifier:
    """CoCo's ``sample`` evidence: no signature, just the report data (and init data)."""

    tee = "sample"

    def verify(self, evidence: bytes, *, expected: Expected = Expected(),
               at: dt.datetime | None = None) -> Claims:
        try:
            doc = json.loads(evidence)
            if not isinstance(doc, dict) or not {"svn", "report_data"} <= set(doc):
                raise ValueError("needs svn and report_data")
            report_data = base64.b64decode(doc["report_data"], validate=True)
            init_data = base64.b64decode(doc.get("init_data", ""), validate=True)
            svn = doc["svn"]
        except (ValueError, TypeError, binascii.Error, RecursionError) as e:
            raise MalformedEvidence(f"sample evidence: {e}", tee="sample") from None
        # CoCo's sample attester puts the raw SHA-384 (48 bytes); Arca's padded it to 64.
        if len(report_data) not in SAMPLE_REPORT_DATA_SIZES:
            raise MalformedEvidence("sample evidence report_data must be 48 bytes (SHA-384) "
                                    "or 64 bytes", tee="sample")
        init_data = init_data or bytes(INIT_DATA_FIELD["sample"])
        for name, want, got in (("report_data", expected.report_data, report_data),
                                ("init_data", expected.init_data_hash, init_data)):
            if want is not None and not hmac.compare_digest(want, got):
                raise BindingMismatch(f"sample evidence {name} does not match", tee="sample",
                                      field=name, expected=want.hex(), actual=got.hex())
        return Claims("sample", {"svn": str(svn), "report_data": report_data.hex(),
                                 "init_data": init_data.hex()})


def _sim_verifier(roots: tuple[str, ...], tee: str) -> Verifier:
    try:
        sim = importlib.import_module("arca.verifier.sim")
    except ImportError as e:
        raise ConfigError(f"--trust-sim-root given but the sim verifier is unavailable: {e}"
                          ) from None
    pems = [pathlib.Path(r).read_bytes() for r in roots]
    verifier: Verifier = sim.SimVerifier(trusted_roots=pems, tee=tee)
    return verifier


def build_verifiers(cfg: KbsConfig) -> dict[str, Verifier]:
    """The TEEs this KBS accepts, decided once at start-up."""
    out: dict[str, Verifier] = {}
    if cfg.insecure_allow_sample:
        out["sample"] = SampleVerifier()
    if cfg.trust_sim_root:
        # Every TEE the sim platform signs for (sim, and vm whose security processor it plays).
        for name, facts in tees.TEES.items():
            if facts.source == tees.SIM_DEVICE:
                out[name] = _sim_verifier(cfg.trust_sim_root, name)
    # Only with current collateral for every check (arca.kbs.collateral says why not).
    hardware, _ = hardware_verifiers(cfg)
    out.update(hardware)
    return out


def evidence_bytes(tee: str, primary: Any) -> bytes:
    """The raw evidence a verifier takes, from ``tee-evidence.primary_evidence`` (its
    envelope is the table's: a quote in base64, or the evidence document itself)."""
    facts = tees.TEES.get(tee)
    if facts is not None and facts.envelope in (tees.QUOTE, tees.SNP_REPORT):
        # Trustee's structured forms (arca.kbs.evidence_formats), then Arca's {"quote"}.
        if facts.envelope == tees.SNP_REPORT and isinstance(primary, dict) and \
                "attestation_report" in primary:
            return formats.snp_evidence_bytes(primary)
        if isinstance(primary, dict) and set(primary) != {"quote"}:
            return formats.quote_bytes(tee, primary, MAX_EVIDENCE_BYTES * 4 // 3 + 4)
        quote = primary.get("quote") if isinstance(primary, dict) else primary
        if not isinstance(quote, str) or len(quote) > MAX_EVIDENCE_BYTES * 4 // 3 + 4:
            raise MalformedEvidence(f"{tee} evidence must be {{\"quote\": <base64>}}", tee=tee)
        try:
            return base64.b64decode(quote, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedEvidence(f"{tee} evidence quote is not base64", tee=tee) from None
    raw = primary.encode() if isinstance(primary, str) else json.dumps(primary).encode()
    if len(raw) > MAX_EVIDENCE_BYTES:
        raise MalformedEvidence(f"{tee} evidence exceeds {MAX_EVIDENCE_BYTES} bytes", tee=tee)
    return raw
