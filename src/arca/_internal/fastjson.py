"""``json.loads``/``json.dumps`` for the host's fast paths (``arca run``'s warm path, container
state files), importing :mod:`json` on first use: a command that never reads or writes JSON
does not pay for it (with ``re`` and ``enum``, ~10 ms on a loaded machine).

These were once ``_json``'s C scanner and encoder driven directly; that is a private CPython
module, which Arca does not use (ADR 0056, ``tests/unit/test_public_apis.py``)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def json_loads(data: str | bytes) -> Any:
    """``json.loads(data)``."""
    import json

    return json.loads(data)


def json_dumps(value: Any, ensure_ascii: bool = True) -> str:
    """``json.dumps(value, ensure_ascii=...)`` (default separators)."""
    import json

    return json.dumps(value, ensure_ascii=ensure_ascii)
