"""The one error hierarchy of Arca, rooted in :class:`ArcaError`; this is the part the guest
raises, in ``arca.wire`` so all zones share it (:mod:`arca.errors` adds the host/verifier-only
ones). Grouped by who is at fault, so callers (exit codes, HTTP status, retries) decide from the
class: bad input, retry, configuration, refusal."""

from __future__ import annotations

TYPE_CHECKING = False  # typing/dataclasses cost ms per start: see arca.wire.record
if TYPE_CHECKING:
    from typing import Any


class ArcaError(Exception):
    """Root of every error Arca raises on purpose. ``str(err)`` is a one-line human message."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        #: Structured context (tee, field, expected, actual, ...), for logs and JSON output.
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class InvalidInput(ArcaError):
    """Input from another zone (JSON, TOML, bundle, archive) is malformed."""


class WireFormatError(InvalidInput):
    """A wire message could not be parsed into its typed model."""


class ConfigError(ArcaError):
    """Local configuration is missing or wrong (operator's fault)."""


class EvidenceError(ArcaError):
    """Evidence failed verification. Subclasses say which check failed."""

    #: Short name of the check, used as ``"<check>: <detail>"`` in reports.
    check = "evidence"

    def describe(self) -> str:
        return f"{self.check}: {self.message}"








class BindingMismatch(EvidenceError):
    """Report data or init-data in the evidence do not match what was expected."""

    check = "binding"




class BrokerUnavailable(ArcaError):
    """The key broker could not be reached; worth a retry."""


class PolicyDenied(ArcaError):
    """A policy (attestation, resource, execution) refused the request."""


class NotFound(ArcaError):
    """A named thing (resource, image, container) does not exist."""
