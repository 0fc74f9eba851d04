"""RFC 8785 JSON Canonicalization Scheme (JCS) for documents without floats: what the guest
canonicalizes (report data, launch descriptor) has none, so ECMAScript number formatting stays
out of the TCB (floats raise ``TypeError``). Strings are escaped as ``json.dumps`` does without
``ensure_ascii``, which is JCS's (section 3.2.2.2); objects are rebuilt with their members in
JCS order first. Tests cross-check it against ``rfc8785``."""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_MAX_SAFE_INT = 2**53 - 1


def _ordered(value: Any) -> Any:
    """``value`` with objects' members sorted by UTF-16 code units (section 3.2.3), checked."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):  # floats have no place in Arca's canonical documents
        if abs(value) > _MAX_SAFE_INT:
            raise ValueError(f"integer {value} is outside the IEEE 754 safe range of JCS")
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_ordered(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("JSON object keys must be strings")
        return {k: _ordered(value[k]) for k in sorted(value, key=lambda k: k.encode("utf-16-be"))}
    raise TypeError(f"{type(value).__name__} has no JSON form")


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of a JSON value."""
    return json.dumps(_ordered(value), ensure_ascii=False, separators=(",", ":")).encode()
