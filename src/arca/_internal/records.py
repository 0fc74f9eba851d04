"""``dataclasses.replace`` for the frozen records of :mod:`arca.wire.record` (host-side: the
guest never copies a record, so this stays out of the TCB)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ms on the runtime's hot path: see arca.wire.record
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")


def replace(obj: T, **changes: Any) -> T:
    """A copy of record ``obj`` with some fields changed."""
    fields = obj.__record_fields__  # type: ignore[attr-defined]
    return type(obj)(**{**{n: getattr(obj, n) for n in fields}, **changes})
