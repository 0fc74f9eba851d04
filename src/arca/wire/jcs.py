"""RFC 8785 JSON Canonicalization Scheme (JCS) for documents without floats: what the guest
canonicalizes (report data, launch descriptor) has none, so ECMAScript number formatting stays
out of the TCB (floats raise ``TypeError``). Tests cross-check it against ``rfc8785``."""

from __future__ import annotations

from _json import encode_basestring  # json.dumps(str, ensure_ascii=False), without json

TYPE_CHECKING = False  # typing/dataclasses cost ms per start: see arca.wire.record
if TYPE_CHECKING:
    from typing import Any

_MAX_SAFE_INT = 2**53 - 1


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, str):
        out.append(encode_basestring(value))
    elif isinstance(value, int):  # floats have no place in Arca's canonical documents
        if abs(value) > _MAX_SAFE_INT:
            raise ValueError(f"integer {value} is outside the IEEE 754 safe range of JCS")
        out.append(str(value))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        if not all(isinstance(k, str) for k in value):
            raise TypeError("JSON object keys must be strings")
        # Keys sort by UTF-16 code units, not by code points.
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        for i, key in enumerate(keys):
            if i:
                out.append(",")
            out.append(encode_basestring(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    else:
        raise TypeError(f"{type(value).__name__} has no JSON form")


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of a JSON value."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")
