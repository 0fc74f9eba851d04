"""The init-data an attester sends, checked against the hash its evidence binds, then parsed for
the attestation policy.

The attester's ``init-data`` body is untrusted text. It means something only once its digest
equals the init-data hash the TEE bound into the *verified* evidence (sim ``init_data_hash``,
TDX MRCONFIGID, SNP HOST_DATA, SGX CONFIGID). So the KBS, after the verifier and before any
policy:

1. computes the digest of the exact body bytes with the hash its ``algorithm`` names
   (:func:`expected_hash`; the field rule of ``arca.wire.initdata``: zero-padded, or cut to the
   field), which the verifier was already asked to bind;
2. compares it with the ``init_data`` claim of the verified evidence itself, at the field's
   exact length, in constant time (:func:`bound_document`) — whatever the verifier did;
3. only then parses it into the document the policy gets as ``input.init_data``: the TOML as
   a JSON object (TOML dates and times as RFC 3339 strings). Without a body the policy gets
   ``null``, never text it cannot trust.

What it does not do: judge the document (policies do) or parse the embedded ``[data]`` values
(``policy``, ``resources`` are TOML strings in CoCo's format and stay strings).
"""

from __future__ import annotations

import datetime as dt
import hmac
import math
import tomllib
from typing import Any

from arca.kbs.protocol import init_data_digest
from arca.wire.errors import BindingMismatch, WireFormatError

#: Largest init-data body accepted (as the guest's own parser: ``arca.wire.initdata``).
MAX_INIT_DATA_BYTES = 256 * 1024


def expected_hash(body: str, field_size: int) -> bytes:
    """The value the TEE's init-data field must hold for ``body``."""
    try:
        size = len(body.encode()) if len(body) <= MAX_INIT_DATA_BYTES else len(body)
    except UnicodeEncodeError:  # a lone surrogate: no byte string to digest
        raise WireFormatError("init-data is not a Unicode string") from None
    if size > MAX_INIT_DATA_BYTES:
        raise WireFormatError(f"init-data exceeds {MAX_INIT_DATA_BYTES} bytes")
    digest = init_data_digest(body)
    return digest[:field_size].ljust(field_size, b"\0")  # rule of arca.wire.initdata


def _json_safe(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v, f"{where}[]") for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        raise WireFormatError(f"init-data {where} is {value}: not representable for a policy")
    return value


def bound_document(body: str, expected: bytes, claims: dict[str, Any]) -> dict[str, Any]:
    """The parsed init-data, once the verified evidence is shown to bind exactly ``body``.

    ``expected`` is :func:`expected_hash` of ``body``; ``claims`` the verified claims' values.
    Raises :class:`BindingMismatch` when the evidence binds anything else.
    """
    got = claims.get("init_data")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(),
                                                           expected.hex().encode()):
        raise BindingMismatch("init-data: the verified evidence binds another init-data hash "
                              "than the body sent", field="init_data",
                              expected=expected.hex(), actual=str(got))
    try:
        doc = tomllib.loads(body)
    except (tomllib.TOMLDecodeError, RecursionError) as e:  # digested above: cannot happen
        raise WireFormatError(f"init-data is not TOML: {e}") from None
    safe: dict[str, Any] = _json_safe(doc, "init-data")
    return safe
