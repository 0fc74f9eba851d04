"""RFC 8785 JSON Canonicalization Scheme (JCS), standard library only.

The guest needs canonical JSON (report data binding, launch descriptor measurement) but may not
depend on third-party packages; tests cross-check this against the ``rfc8785`` package.
"""

from __future__ import annotations

import math
from _json import encode_basestring  # json.dumps(str, ensure_ascii=False), without json

TYPE_CHECKING = False  # typing/dataclasses cost ms per start: see arca.wire.record
if TYPE_CHECKING:
    from typing import Any

_MAX_SAFE_INT = 2**53 - 1


def _number(value: int | float) -> str:
    if isinstance(value, bool):  # bool is an int subclass; handled by caller
        raise TypeError("bool is not a number")
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise ValueError(f"integer {value} is outside the IEEE 754 safe range of JCS")
        return str(value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError("NaN and Infinity have no JSON form")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) <= _MAX_SAFE_INT:
        return str(int(value))
    # ECMAScript Number::toString: shortest round-trip digits, fixed notation for exponents
    # in [-7, 21), exponent notation otherwise.
    digits, exp = _shortest(abs(value))
    sign = "-" if value < 0 else ""
    n = exp + 1
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    mant = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mant}e{'+' if e >= 0 else '-'}{abs(e)}"


def _shortest(value: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of a positive float and its decimal exponent."""
    mant, _, exp_text = repr(value).partition("e")
    whole, _, frac = mant.partition(".")
    raw = whole + frac
    stripped = raw.lstrip("0")
    exp10 = int(exp_text or 0) + len(whole) - 1 - (len(raw) - len(stripped))
    return stripped.rstrip("0") or "0", exp10


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(encode_basestring(value))
    elif isinstance(value, (int, float)):
        out.append(_number(value))
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
