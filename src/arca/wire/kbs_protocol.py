"""Messages of the KBS protocol v0.4.0 (CoCo/Trustee RCAR), and the report-data binding the
guest and the broker compute identically. Each side parses what it receives strictly (unknown
top-level fields refused: the other side is not trusted); the broker's is ``arca.kbs.protocol``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from arca.wire import tees
from arca.wire.errors import WireFormatError
from arca.wire.jcs import canonicalize
from arca.wire.record import dataclass, field

TYPE_CHECKING = False  # typing costs ms per start: see arca.wire.record
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = "0.4.0"
SESSION_COOKIE = "kbs-session-id"
#: The key-agreement algorithm of the TEE's ``tee-pubkey`` (JWE resource responses).
ALG = "ECDH-ES+A256KW"


def _obj(value: Any, what: str, required: set[str],
         optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireFormatError(f"{what} must be a JSON object")
    missing, unknown = required - set(value), set(value) - required - set(optional)
    if missing or unknown:
        raise WireFormatError(
            f"{what}: missing fields {sorted(missing)}, unknown {sorted(unknown)}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise WireFormatError(f"{what} must be a string")
    return value


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise WireFormatError(f"{what} is not JSON: {e}") from None


@dataclass(frozen=True)
class Request:
    """``POST /kbs/v0/auth`` body."""

    tee: str
    version: str = PROTOCOL_VERSION
    extra_params: Any = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "tee": self.tee, "extra-params": self.extra_params}


@dataclass(frozen=True)
class Challenge:
    """``POST /kbs/v0/auth`` response body."""

    nonce: str
    extra_params: Any = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"nonce": self.nonce, "extra-params": self.extra_params}

    @classmethod
    def from_json(cls, value: Any) -> Challenge:
        obj = _obj(value, "challenge", {"nonce"}, ("extra-params",))
        return cls(_str(obj["nonce"], "challenge nonce"), obj.get("extra-params", {}))


@dataclass(frozen=True)
class InitData:
    format: str
    body: str

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "body": self.body}


@dataclass(frozen=True)
class Attestation:
    """``POST /kbs/v0/attest`` body. ``runtime_data`` is ``{"nonce", "tee-pubkey"}``."""

    runtime_data: dict[str, Any]
    primary_evidence: Any
    additional_evidence: str = ""
    init_data: InitData | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"runtime-data": self.runtime_data, "tee-evidence": {
            "primary_evidence": self.primary_evidence,
            "additional_evidence": self.additional_evidence}}
        if self.init_data is not None:
            out["init-data"] = self.init_data.to_json()
        return out


def runtime_data_digest(runtime_data: dict[str, Any]) -> bytes:
    """SHA-384 of the canonical (RFC 8785) runtime-data: what the evidence must carry."""
    try:
        return hashlib.sha384(canonicalize(runtime_data)).digest()
    except (TypeError, ValueError) as e:
        raise WireFormatError(f"runtime-data has no canonical JSON form: {e}") from None


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text: Any, what: str) -> bytes:
    """Strict base64url, one spelling per value: no ``=`` (RFC 7515 section 2), no junk."""
    if not isinstance(text, str) or not text.isascii() or not set(text).isdisjoint("+/="):
        raise WireFormatError(f"{what} must be a base64url string")
    try:
        std = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
        data = binascii.a2b_base64(std, strict_mode=True)
    except binascii.Error:
        raise WireFormatError(f"{what} is not base64url") from None
    if b64u(data) != text:  # non-zero pad bits (RFC 4648 section 3.5): a respelling
        raise WireFormatError(f"{what} is not canonical base64url (pad bits set)")
    return data


def report_data(runtime_data: dict[str, Any], tee: str) -> bytes:
    """What ``tee`` evidence must carry as report data for ``runtime_data`` (the table's rule:
    :attr:`arca.wire.tees.Tee.legacy_runtime_data`)."""
    facts = tees.get(tee)
    if not facts.legacy_runtime_data:
        runtime_data = {**runtime_data, "additional-evidence": ""}
    digest = runtime_data_digest(runtime_data)
    return digest if facts.unpadded_report_data else facts.report_data(digest)
