"""The interface every TEE verifier implements, and the normalized claims it returns."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Expected:
    """Bindings the caller requires. ``None`` means "do not check" (the caller's choice)."""

    report_data: bytes | None = None
    init_data_hash: bytes | None = None


@dataclass(frozen=True)
class Claims:
    """Normalized claims, one shape across TEEs. Byte strings are lowercase hex.

    ``values`` holds the TEE-specific measurements (``mrenclave``/``mrtd``/``measurement``...),
    always with ``report_data`` and ``init_data`` present.
    """

    tee: str
    values: dict[str, Any]
    debug: bool = False
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    format_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"tee": self.tee, **self.values, "debug": self.debug}
        out["tcb_status"] = self.tcb_status
        out["advisory_ids"] = list(self.advisory_ids)
        return out


@runtime_checkable
class Verifier(Protocol):
    """Turns evidence + collateral into :class:`Claims`, or raises an ``EvidenceError``
    (or ``CollateralError`` when collateral is missing) naming the failed check."""

    tee: str

    def verify(
        self,
        evidence: bytes,
        *,
        expected: Expected = ...,
        at: dt.datetime | None = None,
    ) -> Claims: ...


@dataclass
class VerifierOptions:
    """Construction-time settings shared by the verifiers."""

    collateral_dir: str | None = None
    cache_dir: str | None = None
    online: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
