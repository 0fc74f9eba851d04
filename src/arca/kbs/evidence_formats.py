"""Evidence as CoCo guests send it: the report-data binding rules and the per-TEE JSON shapes.

What it does:

* **Report data.** Which bytes a TEE's report data must hold for a given ``runtime-data``.
  Trustee's KBS (``kbs/src/attestation/backend.rs``) hashes the RFC 8785 form of
  ``{"tee-pubkey", "nonce", "additional-evidence"}`` (the last one the ``additional_evidence``
  string of ``tee-evidence``, ``""`` without device evidence); guest-components'
  ``kbs_protocol/src/client/rcar_client.rs`` does the same. KBS protocol 0.4.0 before it (and
  Arca's ``sim`` guests) hashed ``{"nonce", "tee-pubkey"}`` alone; that form binds the same
  nonce and key, so it is accepted only while ``additional_evidence`` is empty (with device
  evidence only the newer form binds it). Padding per TEE follows Trustee's verifiers
  (``deps/verifier/src/*/mod.rs``): ``tdx``/``snp``/``sgx`` zero-pad the digest to the 64-byte
  field (``regularize_data``); ``sample`` compares the raw digest exactly (48 bytes for
  SHA-384, what guest-components' ``attester/src/sample/mod.rs`` puts in), and also the digest
  zero-padded to 64 (what Arca's own ``sample`` evidence carried). Never a truncation.
* **Structured evidence.** ``primary_evidence`` for ``tdx`` is ``{"cc_eventlog", "quote"}``
  (Trustee ``deps/verifier/src/tdx/mod.rs`` ``TdxEvidence``), plus ``aa_eventlog``, the
  attestation agent's text log as Trustee took it from mid-2024 to mid-2025 (the AA's events
  now travel in ``cc_eventlog``), for ``sgx`` ``{"quote"}``, for
  ``snp`` ``{"attestation_report", "cert_chain"}`` with the report in the JSON form of the
  ``sev`` crate (6.x ``AttestationReport`` serde: byte arrays as lists of integers, TCB versions
  as objects) and the certificates as ``CertTableEntry`` objects. These become the raw bytes
  Arca's verifiers take (quote; SNP report ‖ GHCB certificate table). The SNP report is
  rebuilt byte for byte (reserved fields zero, as the ``sev`` crate writes them), so its
  signature verifies only if the rebuilt bytes are those the firmware signed.

What it does not do: verify anything. The TDX event logs (``cc_eventlog``, ``aa_eventlog``)
are decoded here and replayed against the *verified* quote's RTMRs by :mod:`arca.verifier.dcap.ccel`
(:func:`event_log_claims`, after the quote's verification). Unknown fields are refused (the
guest is the other zone).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import uuid
from collections.abc import Iterator
from typing import Any

from arca.errors import MalformedEvidence
from arca.verifier.dcap import ccel
from arca.verifier.snp.certtable import MAX_ENTRIES, MAX_TABLE_BYTES, join_evidence
from arca.verifier.snp.report import REPORT_SIZE
from arca.wire import snpjson, tees
from arca.wire.jcs import canonicalize

#: Report-data field of every TEE Arca verifies (TDX/SNP/SGX REPORTDATA, sim).
REPORT_DATA_SIZE = 64
#: TEEs whose report data Trustee compares exactly (no padding): the table's.
EXACT_REPORT_DATA = frozenset(n for n, t in tees.TEES.items() if t.unpadded_report_data)
#: A TDX event log beyond this is refused before decoding (CCELs are tens of KiB).
MAX_EVENTLOG_B64 = 512 * 1024
#: The optional event-log fields of Trustee's ``TdxEvidence``, current and legacy.
TDX_LOGS = frozenset({"cc_eventlog", "aa_eventlog"})


def _runtime_digests(runtime_data: dict[str, Any], additional: str) -> list[bytes]:
    """SHA-384 digests of the accepted runtime-data forms, the current Trustee form first."""
    forms = [{**runtime_data, "additional-evidence": additional}]
    if additional == "":
        forms.append(dict(runtime_data))
    return [hashlib.sha384(canonicalize(f)).digest() for f in forms]


def report_data_candidates(tee: str, runtime_data: dict[str, Any], additional: str,
                           *, legacy_first: bool = False) -> list[bytes]:
    """The report-data values ``tee`` evidence may carry for ``runtime_data``, most likely
    first (``legacy_first``: the pre-``additional-evidence`` form first, what Arca's ``sim``
    guests send)."""
    digests = _runtime_digests(runtime_data, additional)
    if legacy_first:
        digests.reverse()
    out: list[bytes] = []
    for d in digests:
        padded = d + bytes(REPORT_DATA_SIZE - len(d))
        out.extend((d, padded) if tee in EXACT_REPORT_DATA else (padded,))
    return out


# -- structured evidence ----------------------------------------------------------------------
def _bad(tee: str, detail: str) -> MalformedEvidence:
    return MalformedEvidence(f"{tee} evidence: {detail}", tee=tee)


def _fields(tee: str, obj: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _bad(tee, "primary_evidence must be a JSON object")
    missing, unknown = required - set(obj), set(obj) - required - optional
    if missing or unknown:
        raise _bad(tee, f"missing fields {sorted(missing)}, unknown {sorted(unknown)}")
    return obj


def _b64(tee: str, value: Any, name: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > limit:
        raise _bad(tee, f"{name} must be a base64 string of at most {limit} characters")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(tee, f"{name} is not base64") from None


def quote_bytes(tee: str, primary: Any, limit: int) -> bytes:
    """``tdx``: ``{"quote", "cc_eventlog"?, "aa_eventlog"?}``; ``sgx``: ``{"quote"}``; the raw
    quote."""
    obj = _fields(tee, primary, {"quote"}, set(TDX_LOGS) if tee == "tdx" else set())
    quote = _b64(tee, obj["quote"], "quote", limit)
    if not quote:
        raise _bad(tee, "quote is empty")
    event_log(tee, obj)  # a malformed log is refused before any verification
    aa_event_log(tee, obj)
    return quote


def event_log(tee: str, primary: Any) -> bytes | None:
    """The decoded ``cc_eventlog`` of structured ``tdx`` evidence; ``None`` without one (absent
    or empty, as Trustee's ``TdxEvidence`` reads it) and for other TEEs' evidence."""
    if tee != "tdx" or not isinstance(primary, dict) or not primary.get("cc_eventlog"):
        return None
    return _b64(tee, primary["cc_eventlog"], "cc_eventlog", MAX_EVENTLOG_B64)


def aa_event_log(tee: str, primary: Any) -> str | None:
    """The legacy ``aa_eventlog`` text of structured ``tdx`` evidence; ``None`` without one."""
    if tee != "tdx" or not isinstance(primary, dict) or not primary.get("aa_eventlog"):
        return None
    text = primary["aa_eventlog"]
    if not isinstance(text, str) or len(text) > MAX_EVENTLOG_B64:
        raise _bad(tee, f"aa_eventlog must be a string of at most {MAX_EVENTLOG_B64} "
                        "characters")
    return text


def event_log_claims(tee: str, primary: Any, verified: dict[str, Any]) -> dict[str, Any] | None:
    """The ``ccel`` claims of ``primary``'s TDX event logs once replayed to the RTMRs of the
    verified claims ``verified`` (:func:`arca.verifier.dcap.ccel.verify`: refused with
    :class:`MalformedEvidence` or :class:`BindingMismatch` otherwise); ``None`` without one."""
    log, aa_log = event_log(tee, primary), aa_event_log(tee, primary)
    if log is None and aa_log is None:
        return None
    return ccel.verify(log, verified, aa_log)


#: The sev crate's AttestationReport fields, in serde order (one table with the guest's
#: encoder, :mod:`arca.wire.snpjson`).
SNP_FIELDS = snpjson.FIELDS
#: Report version from which each optional field is present (CPUID: 3, mitigation vectors: 5).
SNP_OPTIONAL = {name: int(str(kind).split("@")[1]) for name, _, kind in SNP_FIELDS
                if str(kind)[0] == "o"}
#: Report versions whose layout is known (2; 3 and 4 share a layout; 5).
SNP_VERSIONS = (2, 3, 4, 5)
_TCB_KEYS = ("fmc", "bootloader", "tee", "snp", "microcode")
#: sev's ``CertType`` names → Arca's collateral names (None: carried, not used).
CERT_TYPES = {"VCEK": "vcek.pem", "VLEK": "vlek.pem", "ASK": "ask.pem", "ARK": "ark.pem",
              "CRL": None, "Empty": None}


def _int(value: Any, bits: int, name: str) -> int:
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise _bad("snp", f"{name} must be an integer of {bits} bits")
    return value


def _array(value: Any, size: int, name: str) -> bytes:
    if not isinstance(value, list) or len(value) != size:
        raise _bad("snp", f"{name} must be a list of {size} byte values")
    return bytes(_int(v, 8, name) for v in value)


def _tcb_from_json(value: Any, name: str) -> bytes:
    obj = _fields("snp", value, set(_TCB_KEYS) - {"fmc"}, {"fmc"})
    bl, tee, snp, uc = (_int(obj[k], 8, f"{name}.{k}") for k in _TCB_KEYS[1:])
    if obj.get("fmc") is None:
        return bytes((bl, tee, 0, 0, 0, 0, snp, uc))
    return bytes((_int(obj["fmc"], 8, f"{name}.fmc"), bl, tee, snp, 0, 0, 0, uc))


def snp_report_to_json(raw: bytes) -> dict[str, Any]:
    """The sev crate's JSON form of a raw 1184-byte report (what guest-components sends)."""
    if len(raw) != REPORT_SIZE:
        raise _bad("snp", f"report must be {REPORT_SIZE} bytes")
    version = struct.unpack_from("<I", raw)[0]
    if version not in SNP_VERSIONS:
        raise _bad("snp", f"report version {version} is not one of {list(SNP_VERSIONS)}")
    return snpjson.to_json(raw)


def snp_report_from_json(value: Any) -> bytes:
    """The raw report from the sev crate's JSON form; every field required, none unknown,
    optional fields present exactly from the report version that has them."""
    names = {n for n, _, _ in SNP_FIELDS}
    obj = _fields("snp", value, names - set(SNP_OPTIONAL), set(SNP_OPTIONAL))
    version = _int(obj["version"], 32, "version")
    if version not in SNP_VERSIONS:
        raise _bad("snp", f"report version {version} is not one of {list(SNP_VERSIONS)}")
    raw = bytearray(REPORT_SIZE)
    for name, off, kind in SNP_FIELDS:
        v = obj.get(name)
        if isinstance(kind, int):
            raw[off:off + kind] = _int(v, kind * 8, name).to_bytes(kind, "little")
        elif kind[0] == "a":
            raw[off:off + int(kind[1:])] = _array(v, int(kind[1:]), name)
        elif kind == "tcb":
            raw[off:off + 8] = _tcb_from_json(v, name)
        elif kind == "ver":
            ver = _fields("snp", v, {"major", "minor", "build"}, set())
            raw[off:off + 3] = bytes(_int(ver[k], 8, f"{name}.{k}")
                                     for k in ("build", "minor", "major"))
        elif kind[0] == "o":
            present = version >= SNP_OPTIONAL[name]
            if (v is not None) != present:
                raise _bad("snp", f"{name} must be {'present' if present else 'null'} in a "
                                  f"version {version} report")
            if present:
                size = int(kind[1:].split("@")[0])
                raw[off:off + size] = _int(v, size * 8, name).to_bytes(size, "little")
        else:
            sig = _fields("snp", v, {"r", "s"}, set())
            raw[off:off + 72] = _array(sig["r"], 72, "signature.r")
            raw[off + 72:off + 144] = _array(sig["s"], 72, "signature.s")
    # The TCB layout the JSON used must be the one the report's identity implies, or the
    # rebuilt bytes would differ from the signed ones in a way a reader cannot see.
    turin = snpjson.turin(bytes(raw))
    for name, _, kind in SNP_FIELDS:
        if kind == "tcb" and (obj[name].get("fmc") is not None) != turin:
            raise _bad("snp", f"{name}.fmc must be {'set' if turin else 'null'} for this "
                              "processor")
    return bytes(raw)


def _cert_entries(value: Any) -> Iterator[tuple[str | None, bytes]]:
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise _bad("snp", f"cert_chain must be a list of at most {MAX_ENTRIES} entries")
    total = 0
    for i, entry in enumerate(value):
        obj = _fields("snp", entry, {"cert_type", "data"}, set())
        kind = obj["cert_type"]
        if isinstance(kind, dict) and set(kind) == {"OTHER"} and isinstance(kind["OTHER"], str):
            try:
                uuid.UUID(kind["OTHER"])
            except ValueError:
                raise _bad("snp", f"cert_chain[{i}] OTHER is not a UUID") from None
            name = None
        elif isinstance(kind, str) and kind in CERT_TYPES:
            name = CERT_TYPES[kind]
        else:
            raise _bad("snp", f"cert_chain[{i}].cert_type is not one of {sorted(CERT_TYPES)} "
                              "or {\"OTHER\": uuid}")
        data = obj["data"]
        if not isinstance(data, list) or total + len(data) > MAX_TABLE_BYTES:
            raise _bad("snp", f"cert_chain data must be byte lists of at most "
                              f"{MAX_TABLE_BYTES} bytes in all")
        total += len(data)
        yield name, _array(data, len(data), f"cert_chain[{i}].data")


def snp_evidence_bytes(primary: Any) -> bytes:
    """``{"attestation_report", "cert_chain"}`` → report ‖ GHCB certificate table."""
    obj = _fields("snp", primary, {"attestation_report"}, {"cert_chain"})
    report = snp_report_from_json(obj["attestation_report"])
    certs: dict[str, bytes] = {}
    if obj.get("cert_chain") is not None:
        for name, der in _cert_entries(obj["cert_chain"]):
            if name is None:
                continue
            if name in certs:
                raise _bad("snp", f"cert_chain carries {name} twice")
            if not der:
                raise _bad("snp", f"cert_chain {name} is empty")
            certs[name] = der
    return join_evidence(report, certs) if certs else report
