"""``json.loads``/``json.dumps`` for the host's fast paths (``arca run``'s warm path, container
state files, ``arca ps``), imported only when first used: :mod:`json` brings ``re`` and
``enum`` along, and commands that never read or write JSON should not pay for them
(ADR 0056). Once a hand-driven use of CPython's private ``_json`` and then a reader of Arca's
own; both gave way to the standard library's public module (the cost, a few milliseconds of
CPU per command, is inside the start-up goals: ADR 0056)."""

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
