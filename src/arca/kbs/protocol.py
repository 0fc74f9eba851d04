"""The broker's side of the KBS protocol (``arca.wire.kbs_protocol``): strict parsing of the
requests the guest sends (unknown fields refused: the guest is not trusted) and the init-data
digest. Outside the TCB: the guest only builds these messages."""

from __future__ import annotations

import hashlib
from typing import Any

from arca.wire.errors import WireFormatError
from arca.wire.kbs_protocol import Attestation, InitData, Request, _obj, _str

#: Hash names accepted in init-data's ``algorithm`` (IANA names and the short CoCo spellings).
INIT_DATA_HASHES = {"sha256": "sha256", "sha-256": "sha256", "sha384": "sha384",
                    "sha-384": "sha384", "sha512": "sha512", "sha-512": "sha512"}


def parse_request(value: Any) -> Request:
    """``POST /kbs/v0/auth`` body."""
    obj = _obj(value, "request", {"version", "tee"}, ("extra-params",))
    extra = obj.get("extra-params", {})
    if not isinstance(extra, (dict, str)):  # older clients send "" here
        raise WireFormatError("request extra-params must be an object or a string")
    return Request(_str(obj["tee"], "request tee"), _str(obj["version"], "request version"), extra)


def parse_init_data(value: Any) -> InitData:
    obj = _obj(value, "init-data", {"format", "body"})
    if obj["format"] != "toml":
        raise WireFormatError(f"init-data format {obj['format']!r} is not supported (toml)")
    return InitData("toml", _str(obj["body"], "init-data body"))


def parse_attestation(value: Any) -> Attestation:
    """``POST /kbs/v0/attest`` body."""
    obj = _obj(value, "attestation", {"runtime-data", "tee-evidence"}, ("init-data",))
    rd = _obj(obj["runtime-data"], "runtime-data", {"nonce", "tee-pubkey"})
    _str(rd["nonce"], "runtime-data nonce")
    if not isinstance(rd["tee-pubkey"], dict):
        raise WireFormatError("runtime-data tee-pubkey must be a JWK object")
    ev = _obj(obj["tee-evidence"], "tee-evidence", {"primary_evidence"},
              ("additional_evidence",))
    init = obj.get("init-data")
    return Attestation(rd, ev["primary_evidence"],
                       _str(ev.get("additional_evidence", ""), "additional_evidence"),
                       None if init is None else parse_init_data(init))


def init_data_digest(body: str) -> bytes:
    """Digest of a TOML init-data document, with the hash its ``algorithm`` names.

    Like CoCo, the digest covers the exact document bytes the TEE was launched with; the
    default algorithm is sha384 (as in ``arca.wire.initdata``).
    """
    import tomllib

    try:
        doc = tomllib.loads(body)
    except (tomllib.TOMLDecodeError, RecursionError) as e:  # deep nesting
        raise WireFormatError(f"init-data is not TOML: {e}") from None
    alg = INIT_DATA_HASHES.get(str(doc.get("algorithm", "sha384")).lower())
    if alg is None:
        raise WireFormatError(
            f"init-data algorithm {doc.get('algorithm')!r} is not one of sha256/sha384/sha512")
    return hashlib.new(alg, body.encode()).digest()
