"""RFC 7807 problem responses with Trustee's error type names, and the one table mapping
Arca's error classes to them. Handlers raise :class:`KbsProblem`; nothing else picks a status.

Divergences from Trustee, on purpose (issue 4): a policy denial is 403 (Trustee: 401), malformed
input is 400 (Trustee: 401 ``SerdeError``), a missing resource is 404 ``ResourceNotFound`` and an
oversized body 413 ``PayloadTooLarge``.
"""

from __future__ import annotations

from typing import Any

from arca.errors import (
    ArcaError,
    CollateralError,
    ConfigError,
    EvidenceError,
    InvalidInput,
    NotFound,
    PolicyDenied,
)

PROBLEM_BASE = "https://github.com/confidential-containers/kbs/errors/"

#: Type name -> HTTP status. Every response the KBS sends with an error uses one of these.
STATUS: dict[str, int] = {
    "AdminAuth": 401,
    "AttestationError": 401,
    "TokenNotFound": 401,
    "TokenVerifierError": 401,
    "PolicyDeny": 403,
    "InvalidRequestPath": 404,
    "ResourceNotFound": 404,
    "SerdeError": 400,
    "PayloadTooLarge": 413,
    "MethodNotAllowed": 405,
    "PolicyEngine": 500,
    "InternalError": 500,
    "CollateralUnavailable": 503,
}


class KbsProblem(Exception):
    """An error the KBS answers with ``{"type": .../<name>, "detail": ...}``."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        if name not in STATUS:
            raise ValueError(f"unknown problem type {name}")
        self.name = name
        self.detail = detail
        self.status = STATUS[name]

    def body(self) -> dict[str, Any]:
        return {"type": PROBLEM_BASE + self.name, "title": self.name, "status": self.status,
                "detail": self.detail}


def from_error(err: ArcaError, *, during: str) -> KbsProblem:
    """Map an Arca error raised while serving ``during`` (``attest``/``resource``/...)."""
    if isinstance(err, EvidenceError):
        return KbsProblem("AttestationError", f"evidence rejected: {err.describe()}")
    if isinstance(err, CollateralError):
        return KbsProblem("CollateralUnavailable", f"collateral unavailable: {err}")
    if isinstance(err, PolicyDenied):
        return KbsProblem("PolicyDeny", str(err))
    if isinstance(err, NotFound):
        return KbsProblem("ResourceNotFound", str(err))
    if isinstance(err, InvalidInput):
        return KbsProblem("SerdeError", f"malformed {during} request: {err}")
    if isinstance(err, ConfigError):
        return KbsProblem("AttestationError", f"{during}: {err}")
    return KbsProblem("PolicyEngine", f"{during}: {err}")
