"""Stand-ins, with the same results and errors, for ``hashlib`` (it loads OpenSSL: ~2 ms of
every TD start), ``tomllib``, ``json`` and ``fnmatch`` (~5 ms each: ``re``, ``enum``...)."""

from __future__ import annotations

from _json import encode_basestring, encode_basestring_ascii, make_encoder, make_scanner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
# At module level, so the guest runtime's builder ships them. CPython's own C hashes (no
# OpenSSL): _sha2 since Python 3.12 (Debian 13's 3.13), _sha256/_sha512 before (Debian 12).
try:
    from _sha2 import sha256, sha384, sha512  # type: ignore[import-not-found]
except ImportError:
    from _sha256 import sha256  # type: ignore[import-not-found]
    from _sha512 import sha384, sha512  # type: ignore[import-not-found]


def digest(algorithm: str, data: bytes) -> bytes:
    """``hashlib.new(algorithm, data).digest()`` for sha256, sha384 and sha512."""
    new: Any = {"sha256": sha256, "sha384": sha384, "sha512": sha512}[algorithm]
    return new(data).digest()  # type: ignore[no-any-return]


def toml_loads(text: str) -> dict[str, Any]:
    """``tomllib.loads``, without its ~5 ms of imports for the TOML init-data is written in:
    ``[table]``/``[[array]]`` headers, bare keys, whole-line comments, strings without escapes,
    ``'''`` blocks, booleans, decimal numbers. Anything else goes to tomllib (its result or
    error): no document parses differently (differential tests)."""
    try:
        return _toml_subset(text)
    except _Unsupported:
        import tomllib

        return tomllib.loads(text)


class _Unsupported(Exception):
    """Outside the subset: tomllib decides."""


def _toml_subset(text: str) -> dict[str, Any]:
    if any(c < " " and c not in "\t\n" or c == "\x7f" for c in text):
        raise _Unsupported  # control characters, CR included
    root: dict[str, Any] = {}
    table, arrays, lines = root, set(), iter(text.split("\n"))
    for raw in lines:
        line = raw.strip(" \t")
        key, eq, value = (part.strip(" \t") for part in line.partition("="))
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            array = line[:2] == "[[" and line[-2:] == "]]"
            name = line[1 + array:-1 - array]
            if line[-1] != "]" or not _bare(name) or name in root and name not in arrays or (
                    name in arrays and not array):
                raise _Unsupported
            table = {}
            if array:
                arrays.add(name)
                root.setdefault(name, []).append(table)
            else:
                root[name] = table
            continue
        if not eq or not _bare(key) or key in table:
            raise _Unsupported
        if value[:3] == "'''":  # the block as written: trailing blanks and all
            block = [raw.partition("=")[2].lstrip(" \t")[3:]]
            while "'''" not in block[-1]:  # (a delimiter cannot span lines)
                block.append(next(lines, "'''#"))  # "#": unterminated, tomllib says so
            value, _, tail = "\n".join(block).partition("'''")
            if tail.strip(" \t"):
                raise _Unsupported
            table[key] = value.removeprefix("\n")
        else:
            table[key] = _scalar(value)
    return root


def _bare(key: str) -> bool:
    return bool(key) and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)


def _scalar(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        if text[0] in text[1:-1] or "\\" in text:
            raise _Unsupported
        return text[1:-1]
    whole, dot, frac = (text[1:] if text[:1] in ("+", "-") else text).partition(".")
    if len(text) < 30 and whole.isascii() and whole.isdigit() and (
            whole == "0" or whole[0] != "0") and (not dot or frac.isascii() and frac.isdigit()):
        return float(text) if dot else int(text)
    raise _Unsupported


class _Decoding:
    """What ``_json.make_scanner`` reads: ``json.JSONDecoder()``'s defaults."""

    strict, object_hook, object_pairs_hook, parse_float, parse_int = True, None, None, float, int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"),
                      "-Infinity": float("-inf")}.__getitem__


_scan = make_scanner(_Decoding())  # type: ignore[arg-type]  # it reads the attributes


def json_loads(data: str | bytes) -> Any:
    """``json.loads`` without ``json``'s ~5 ms of imports (``re``, ``enum``...): the same C
    scanner. Whatever it refuses goes to json, for its exact error (a ValueError) or result; a
    document json would not read as UTF-8 starts with a BOM or NUL, which the scanner refuses."""
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


def fnmatchcase(name: str, pattern: str) -> bool:
    """``fnmatch.fnmatchcase`` without ``re`` for patterns whose only wildcard is ``*`` (the
    orchestrator env names, most policies); others go to fnmatch."""
    if "?" in pattern or "[" in pattern:
        import fnmatch

        return fnmatch.fnmatchcase(name, pattern)
    if "*" not in pattern:
        return name == pattern
    head, *middle, tail = pattern.split("*")
    pos, end = len(head), len(name) - len(tail)
    if pos > end or not name.startswith(head) or not name.endswith(tail):
        return False
    for part in middle:  # leftmost matches leave the most room for the rest
        pos = name.find(part, pos, end)
        if pos < 0:
            return False
        pos += len(part)
    return True
