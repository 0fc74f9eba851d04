"""``json.loads``/``json.dumps`` for the ``arca run`` path, without importing :mod:`json`.

The :mod:`json` package imports :mod:`re` (and with it enum, functools, collections): ~4 ms
of every ``arca run``, for a handful of small files. Its actual work is done by CPython's
``_json`` accelerator, which is used here directly, configured exactly as ``json.loads`` and
``json.dumps`` with default arguments configure it (``ensure_ascii``, ``", "``/``": "``
separators, NaN allowed, no indent), so the output is byte-for-byte ``json.dumps``' and the
parse ``json.loads``' (a test compares them on generated documents). Decoding errors are
``ValueError`` (the accelerator raises ``json.JSONDecodeError`` and imports :mod:`json` only
then). Without ``_json`` (another Python implementation) this is :mod:`json`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None  # type: ignore[assignment]

_WHITESPACE = " \t\n\r"  # json.decoder.WHITESPACE


class _DecoderSettings:
    """The attributes ``_json.make_scanner`` reads from a ``json.JSONDecoder()``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


def _not_serializable(o: object) -> object:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


if _json is not None:
    _scan = _json.make_scanner(_DecoderSettings())  # type: ignore[arg-type]

    def loads(data: str | bytes) -> Any:
        """``json.loads(data)`` for UTF-8 ``bytes`` or ``str``."""
        s = data.decode("utf-8") if isinstance(data, bytes) else data
        start = len(s) - len(s.lstrip(_WHITESPACE))
        try:
            obj, end = _scan(s, start)
        except StopIteration:
            raise ValueError(f"Expecting value: char {start}") from None
        if len(s[end:].lstrip(_WHITESPACE)):
            raise ValueError(f"Extra data: char {end}")
        return obj

    def dumps(obj: Any) -> str:
        """``json.dumps(obj)``."""
        # A new encoder per call, as json.dumps: its circular-reference markers start empty.
        encode = _json.make_encoder({}, _not_serializable, _json.encode_basestring_ascii, None,
                                    ": ", ", ", False, False, True)
        return "".join(encode(obj, 0))
else:  # pragma: no cover
    import json

    def loads(data: str | bytes) -> Any:
        return json.loads(data)

    def dumps(obj: Any) -> str:
        return json.dumps(obj)
