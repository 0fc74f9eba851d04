"""``json.loads``/``json.dumps`` for the host's fast paths (``arca run``'s warm path, container
state files): the C scanner and encoder of ``json`` without importing ``json`` (``re``,
``enum``: ~5 ms per CLI call). Host-only and outside the TCB (ADR 0054): the guest and
``arca.wire`` use ``json`` itself, since ``_json`` is a private CPython module. Results and
errors are json's: whatever the C parts refuse goes to json for its exact answer."""

from __future__ import annotations

from _json import encode_basestring, encode_basestring_ascii, make_encoder, make_scanner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Decoding:
    """What ``_json.make_scanner`` reads: ``json.JSONDecoder()``'s defaults."""

    strict, object_hook, object_pairs_hook, parse_float, parse_int = True, None, None, float, int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"),
                      "-Infinity": float("-inf")}.__getitem__


_scan = make_scanner(_Decoding())  # type: ignore[arg-type]  # it reads the attributes


def json_loads(data: str | bytes) -> Any:
    """``json.loads``: the same C scanner. Whatever it refuses goes to json, for its exact
    error (a ValueError) or result; a document json would not read as UTF-8 starts with a BOM
    or NUL, which the scanner refuses."""
    try:
        text = data if isinstance(data, str) else data.decode("utf-8", "surrogatepass")
        value, end = _scan(text, len(text) - len(text.lstrip(" \t\n\r")))
        if not text[end:].strip(" \t\n\r"):
            return value
    except Exception:  # noqa: BLE001, S110 (RecursionError too): json raises it again
        pass
    import json

    return json.loads(data)


def _refuse(value: Any) -> Any:
    raise TypeError  # json.dumps says what is wrong


def json_dumps(value: Any, ensure_ascii: bool = True) -> str:
    """``json.dumps(value, ensure_ascii=...)`` (default separators): the same C encoder; what
    it refuses (non-JSON types, cycles, deep nesting) goes to json for its exact error."""
    try:
        return "".join(make_encoder({}, _refuse, encode_basestring_ascii if ensure_ascii else
                                    encode_basestring, None, ": ", ", ", False, False, True)(
            value, 0))
    except Exception:  # noqa: BLE001
        import json

        return json.dumps(value, ensure_ascii=ensure_ascii)
