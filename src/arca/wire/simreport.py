"""The ``sim`` backend's report and evidence formats. Evidence is one JSON document: ``report``
(base64 of the report JSON), ``signature`` (base64 DER ECDSA P-384/SHA-384 over those exact
bytes, so the verifier never re-serializes what it checks) and ``cert_chain`` (PEM platform
cert, PEM sim root). ``sim`` protects a TD against other containers, never against the host.
Only the reading side is here (the guest's and the verifier's); the platform, which alone
writes them, has the writers (:mod:`arca.host.simtee.platform`)."""

from __future__ import annotations

import binascii
import json

from arca.wire import tees
from arca.wire.errors import WireFormatError
from arca.wire.record import dataclass

TYPE_CHECKING = False  # typing costs ms per start: see arca.wire.record
if TYPE_CHECKING:
    from typing import Any

REPORT_VERSION = 1
REPORT_DATA_SIZE = 64
INIT_DATA_HASH_SIZE = 48
MEASUREMENT_SIZE = 48
#: TEEs whose reports the sim platform signs (the table's sim-device TEEs): measurement = the
#: launch descriptor's, or what the VM was launched with (``Tee.launch_measured``).
PLATFORM_TEES = tuple(n for n, t in tees.TEES.items() if t.source == tees.SIM_DEVICE)
#: Evidence larger than this is refused before parsing (a chain of two certificates is ~2 KiB).
MAX_EVIDENCE_BYTES = 64 * 1024


@dataclass(frozen=True)
class SimReport:
    measurement: bytes
    init_data_hash: bytes
    report_data: bytes
    td_id: str
    platform_id: str
    svn: int = 1
    debug: bool = False
    version: int = REPORT_VERSION
    tee: str = "sim"

    @classmethod
    def from_json(cls, obj: Any) -> SimReport:
        fields = {"version", "tee", "measurement", "init_data_hash", "report_data", "td_id",
                  "platform_id", "svn", "debug"}
        if not isinstance(obj, dict):
            raise WireFormatError("sim report must be a JSON object")
        if set(obj) != fields:
            raise WireFormatError(f"sim report fields differ: missing {sorted(fields - set(obj))}, "
                                  f"unknown {sorted(set(obj) - fields)}")
        if obj["version"] != REPORT_VERSION or obj["tee"] not in PLATFORM_TEES:
            raise WireFormatError("sim report: unsupported version or tee")
        if type(obj["svn"]) is not int or type(obj["debug"]) is not bool:
            raise WireFormatError("sim report: svn must be an integer and debug a boolean")
        if not isinstance(obj["td_id"], str) or not isinstance(obj["platform_id"], str):
            raise WireFormatError("sim report: td_id and platform_id must be strings")
        return cls(_hex(obj, "measurement", MEASUREMENT_SIZE),
                   _hex(obj, "init_data_hash", INIT_DATA_HASH_SIZE),
                   _hex(obj, "report_data", REPORT_DATA_SIZE),
                   obj["td_id"], obj["platform_id"], obj["svn"], obj["debug"], tee=obj["tee"])


@dataclass(frozen=True)
class SimEvidence:
    report_bytes: bytes
    signature: bytes
    cert_chain: tuple[str, ...]

    def report(self) -> SimReport:
        try:
            obj = json.loads(self.report_bytes)
        except (ValueError, RecursionError) as e:
            raise WireFormatError(f"sim report is not JSON: {e}") from None
        return SimReport.from_json(obj)

    @classmethod
    def from_bytes(cls, data: bytes) -> SimEvidence:
        if len(data) > MAX_EVIDENCE_BYTES:
            raise WireFormatError(f"sim evidence exceeds {MAX_EVIDENCE_BYTES} bytes")
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise WireFormatError(f"sim evidence is not JSON: {e}") from None
        if not isinstance(obj, dict) or set(obj) != {"report", "signature", "cert_chain"}:
            raise WireFormatError("sim evidence must have exactly report, signature, cert_chain")
        chain = obj["cert_chain"]
        if not isinstance(chain, list) or not chain or not all(isinstance(c, str) for c in chain):
            raise WireFormatError("sim evidence cert_chain must be a non-empty list of PEM strings")
        try:
            report = binascii.a2b_base64(obj["report"], strict_mode=True)
            sig = binascii.a2b_base64(obj["signature"], strict_mode=True)
        except (binascii.Error, TypeError, ValueError):
            raise WireFormatError("sim evidence report/signature must be base64") from None
        return cls(report, sig, tuple(chain))


def _hex(obj: dict[str, Any], key: str, size: int) -> bytes:
    """Exactly ``2 * size`` characters of ``[0-9a-f]`` (``bytes.fromhex`` alone skips blanks)."""
    value = obj[key]
    if not isinstance(value, str) or len(value) != 2 * size or value.strip("0123456789abcdef"):
        raise WireFormatError(f"sim report: {key} must be {size} bytes of lowercase hex")
    return bytes.fromhex(value)
