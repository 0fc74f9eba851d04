"""Messages of the KBS protocol v0.4.0 (CoCo/Trustee RCAR), shared by the guest and the broker.

Typed models with explicit, strict parsing: unknown top-level fields are refused because the
other side is not trusted. Also the two bindings both sides must compute identically: report
data (SHA-384 of the RFC 8785 form of ``runtime-data``) and the init-data digest. Transport,
sessions and crypto live elsewhere (``arca.guest.kbs_client``, ``arca.kbs``).
"""

from __future__ import annotations

import base64
import json

from arca.wire.errors import WireFormatError
from arca.wire.jcs import canonicalize
from arca.wire.lean import digest

TYPE_CHECKING = False  # typing/dataclasses cost ms per start: see arca.wire.record
if TYPE_CHECKING:
    from dataclasses import dataclass, field
    from typing import Any
else:
    from arca.wire.record import dataclass, field

PROTOCOL_VERSION = "0.4.0"
SESSION_COOKIE = "kbs-session-id"
#: The key-agreement algorithm of the TEE's ``tee-pubkey`` (JWE resource responses).
ALG = "ECDH-ES+A256KW"
#: Size of the report data the guest asks its TEE to sign (TDX/SNP/SGX/sim all have 64 bytes).
REPORT_DATA_SIZE = 64
#: Hash names accepted in init-data's ``algorithm`` (IANA names and the short CoCo spellings).
INIT_DATA_HASHES = {"sha256": "sha256", "sha-256": "sha256", "sha384": "sha384",
                    "sha-384": "sha384", "sha512": "sha512", "sha-512": "sha512"}


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

    @classmethod
    def from_json(cls, value: Any) -> Request:
        obj = _obj(value, "request", {"version", "tee"}, ("extra-params",))
        extra = obj.get("extra-params", {})
        if not isinstance(extra, (dict, str)):  # older clients send "" here
            raise WireFormatError("request extra-params must be an object or a string")
        return cls(_str(obj["tee"], "request tee"), _str(obj["version"], "request version"), extra)


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

    @classmethod
    def from_json(cls, value: Any) -> InitData:
        obj = _obj(value, "init-data", {"format", "body"})
        if obj["format"] != "toml":
            raise WireFormatError(f"init-data format {obj['format']!r} is not supported (toml)")
        return cls("toml", _str(obj["body"], "init-data body"))

    def digest(self) -> bytes:
        return init_data_digest(self.body)


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

    @classmethod
    def from_json(cls, value: Any) -> Attestation:
        obj = _obj(value, "attestation", {"runtime-data", "tee-evidence"}, ("init-data",))
        rd = _obj(obj["runtime-data"], "runtime-data", {"nonce", "tee-pubkey"})
        _str(rd["nonce"], "runtime-data nonce")
        if not isinstance(rd["tee-pubkey"], dict):
            raise WireFormatError("runtime-data tee-pubkey must be a JWK object")
        ev = _obj(obj["tee-evidence"], "tee-evidence", {"primary_evidence"},
                  ("additional_evidence",))
        init = obj.get("init-data")
        return cls(rd, ev["primary_evidence"],
                   _str(ev.get("additional_evidence", ""), "additional_evidence"),
                   None if init is None else InitData.from_json(init))

    def nonce(self) -> str:
        return str(self.runtime_data["nonce"])


def runtime_data_digest(runtime_data: dict[str, Any]) -> bytes:
    """SHA-384 of the canonical (RFC 8785) runtime-data: what the evidence must carry."""
    try:
        return digest("sha384", canonicalize(runtime_data))
    except (TypeError, ValueError) as e:
        raise WireFormatError(f"runtime-data has no canonical JSON form: {e}") from None


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pad(digest: bytes, size: int) -> bytes:
    """Zero-pad a digest to a TEE field size; a digest longer than the field is an error."""
    if len(digest) > size:
        raise ValueError(f"a {len(digest)}-byte digest does not fit a {size}-byte field")
    return digest + bytes(size - len(digest))


def report_data(runtime_data: dict[str, Any]) -> bytes:
    return pad(runtime_data_digest(runtime_data), REPORT_DATA_SIZE)


def init_data_digest(body: str) -> bytes:
    """Digest of a TOML init-data document, with the hash its ``algorithm`` names.

    Like CoCo, the digest covers the exact document bytes the TEE was launched with; the
    default algorithm is sha384 (as in ``arca.wire.initdata``).
    """
    import tomllib  # ~6 ms: the guest client never calls this, only the KBS

    try:
        doc = tomllib.loads(body)
    except (tomllib.TOMLDecodeError, RecursionError) as e:  # deep nesting
        raise WireFormatError(f"init-data is not TOML: {e}") from None
    alg = INIT_DATA_HASHES.get(str(doc.get("algorithm", "sha384")).lower())
    if alg is None:
        raise WireFormatError(
            f"init-data algorithm {doc.get('algorithm')!r} is not one of sha256/sha384/sha512")
    return digest(alg, body.encode())
