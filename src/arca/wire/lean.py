"""Stand-in for ``hashlib``: it loads OpenSSL (~2 ms of every TD start); the builtin SHA-2
modules give the same digests."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
try:  # at module level, so the guest runtime's builder ships them
    from _sha256 import sha256  # type: ignore[import-not-found]
    from _sha512 import sha384, sha512  # type: ignore[import-not-found]
except ImportError:  # Python >= 3.12 calls them _sha2
    from hashlib import sha256, sha384, sha512


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
