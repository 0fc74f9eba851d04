"""``json.loads``/``json.dumps`` for the host's fast paths (``arca run``'s warm path, container
state files, ``arca ps``): a small owned reader and writer on ``str`` methods, because
importing :mod:`json` imports ``re`` and ``enum`` (~8 ms of CPU per command on a loaded
machine; ADR 0056). They were once ``_json``'s C parts driven directly, a private CPython
module (``tests/unit/test_public_apis.py`` refuses it now).

The rule that keeps them exact: they answer only for what they fully understand (the plain
JSON that Arca writes: exact ``dict``/``list``/``tuple``/``str``/``int``/``float``/``bool``/
``None``, ASCII digits, no NaN); anything else — an error, a BOM, a non-JSON type, a cycle,
deep nesting, whatever comes past :data:`OWNED_BUDGET_CHARS` — goes to :mod:`json` for
its exact result or error.
``tests/unit/host/test_fastjson.py`` holds them to json's answers on generated and hostile
input."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Characters the owned reader reads per process before json takes over: it is ~20x slower
#: than json's C scanner (~0.1 ms per container record on a loaded machine), so past this
#: much importing json pays for itself. A warm ``arca run`` reads ~5.5 Ki characters;
#: ``arca ps`` over many containers costs at most ~20 records' worth more than with json.
OWNED_BUDGET_CHARS = 1 << 14
_budget = [OWNED_BUDGET_CHARS]
_WS = " \t\n\r"
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
#: json's string escapes (``encode_basestring``): control characters, quote, backslash.
_OUT = {c: f"\\u{c:04x}" for c in range(32)} | {
    ord('"'): '\\"', ord("\\"): "\\\\", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t"}
#: ... and, with ensure_ascii, DEL too (``encode_basestring_ascii`` escapes all but ' '..'~').
_OUT_ASCII = _OUT | {0x7F: "\\u007f"}


class _NotOwned(Exception):
    """Not plain enough to answer here: json answers."""


def _skip_ws(s: str, i: int) -> int:
    if s[i:i + 1] not in _WS:  # the common case: no whitespace (an empty slice is "in")
        return i
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def _string(s: str, i: int) -> tuple[str, int]:
    """The string whose opening quote is before ``i``, and the index after its closing one."""
    parts = []
    while True:
        q = s.find('"', i)
        if q < 0:
            raise _NotOwned
        b = s.find("\\", i, q)
        raw = s[i:q if b < 0 else b]
        if raw and min(raw) < " ":  # json (strict) refuses raw control characters
            raise _NotOwned
        parts.append(raw)
        if b < 0:
            return "".join(parts), q + 1
        esc = s[b + 1:b + 2]
        if esc in _ESCAPES:
            parts.append(_ESCAPES[esc])
            i = b + 2
            continue
        code = _hex4(s, b + 2) if esc == "u" else -1
        if code < 0:
            raise _NotOwned
        i = b + 6
        if 0xD800 <= code <= 0xDBFF and s[i:i + 2] == "\\u":  # a surrogate pair is one char
            low = _hex4(s, i + 2)
            if 0xDC00 <= low <= 0xDFFF:
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                i += 6
        parts.append(chr(code))


def _hex4(s: str, i: int) -> int:
    h = s[i:i + 4]
    return int(h, 16) if len(h) == 4 and all(c in _HEX for c in h) else -1


def _number(s: str, i: int) -> tuple[int | float, int]:
    """json's grammar, ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?``, ASCII digits."""
    j = i + (s[i] == "-")
    start = j
    while j < len(s) and s[j] in _DIGITS:
        j += 1
    if j == start or (s[start] == "0" and j - start > 1):
        raise _NotOwned
    is_float = False
    if s[j:j + 1] == "." and s[j + 1:j + 2] in _DIGITS and s[j + 1:j + 2]:
        j += 2
        while j < len(s) and s[j] in _DIGITS:
            j += 1
        is_float = True
    if s[j:j + 1] in ("e", "E") and s[j:j + 1]:
        k = j + 1 + (s[j + 1:j + 2] in ("+", "-") and bool(s[j + 1:j + 2]))
        if s[k:k + 1] in _DIGITS and s[k:k + 1]:
            j = k + 1
            while j < len(s) and s[j] in _DIGITS:
                j += 1
            is_float = True
    return (float(s[i:j]) if is_float else int(s[i:j])), j


def _value(s: str, i: int) -> tuple[Any, int]:
    c = s[i:i + 1]
    if c == '"':
        return _string(s, i + 1)
    if c == "{":
        obj: dict[str, Any] = {}
        i = _skip_ws(s, i + 1)
        if s[i:i + 1] == "}":
            return obj, i + 1
        while True:
            if s[i:i + 1] != '"':
                raise _NotOwned
            key, i = _string(s, i + 1)
            i = _skip_ws(s, i)
            if s[i:i + 1] != ":":
                raise _NotOwned
            obj[key], i = _value(s, _skip_ws(s, i + 1))
            i = _skip_ws(s, i)
            if s[i:i + 1] == "}":
                return obj, i + 1
            if s[i:i + 1] != ",":
                raise _NotOwned
            i = _skip_ws(s, i + 1)
    if c == "[":
        arr: list[Any] = []
        i = _skip_ws(s, i + 1)
        if s[i:i + 1] == "]":
            return arr, i + 1
        while True:
            item, i = _value(s, i)
            arr.append(item)
            i = _skip_ws(s, i)
            if s[i:i + 1] == "]":
                return arr, i + 1
            if s[i:i + 1] != ",":
                raise _NotOwned
            i = _skip_ws(s, i + 1)
    for word, val in (("null", None), ("true", True), ("false", False)):
        if s.startswith(word, i):
            return val, i + len(word)
    if c and c in "-0123456789":
        return _number(s, i)
    raise _NotOwned


def json_loads(data: str | bytes) -> Any:
    """``json.loads(data)``: the same value, or json's own error."""
    try:
        text = data if isinstance(data, str) else data.decode("utf-8", "surrogatepass")
        if len(text) <= _budget[0] and not text.startswith("\ufeff"):
            _budget[0] -= len(text)
            value, end = _value(text, _skip_ws(text, 0))
            if _skip_ws(text, end) == len(text):
                return value
    except Exception:  # noqa: BLE001, S110 (_NotOwned, RecursionError, ...): json answers
        pass
    import json

    return json.loads(data)


def _u_escape(code: int) -> str:
    """``\\uXXXX`` as json writes it with ensure_ascii (a pair of them past the BMP)."""
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"


def _dump(v: Any, out: list[str], table: dict[int, str], ascii_only: bool) -> None:
    t = type(v)
    if t is str:
        text = v.translate(table)
        if ascii_only and not text.isascii():
            text = "".join(c if c < "\x80" else _u_escape(ord(c)) for c in text)
        out.append('"' + text + '"')
    elif v is None:
        out.append("null")
    elif v is True or v is False:
        out.append("true" if v else "false")
    elif t is int:
        out.append(int.__repr__(v))
    elif t is float:
        if v != v or v in (float("inf"), float("-inf")):
            raise _NotOwned  # json's NaN/Infinity spellings: json writes them
        out.append(float.__repr__(v))
    elif t is list or t is tuple:
        out.append("[")
        for n, item in enumerate(v):
            if n:
                out.append(", ")
            _dump(item, out, table, ascii_only)
        out.append("]")
    elif t is dict:
        out.append("{")
        for n, (key, item) in enumerate(v.items()):
            if type(key) is not str:
                raise _NotOwned  # json's key conversions (int, float, bool, None)
            if n:
                out.append(", ")
            _dump(key, out, table, ascii_only)
            out.append(": ")
            _dump(item, out, table, ascii_only)
        out.append("}")
    else:
        raise _NotOwned


def json_dumps(value: Any, ensure_ascii: bool = True) -> str:
    """``json.dumps(value, ensure_ascii=...)`` (default separators): the same text, or
    json's own error."""
    out: list[str] = []
    try:
        _dump(value, out, _OUT_ASCII if ensure_ascii else _OUT, ensure_ascii)
        return "".join(out)
    except Exception:  # noqa: BLE001, S110 (_NotOwned, RecursionError on a cycle, ...)
        pass
    import json

    return json.dumps(value, ensure_ascii=ensure_ascii)
