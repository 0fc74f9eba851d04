"""The error hierarchy: all of :mod:`arca.wire.errors` (the part the guest shares, in the TCB)
re-exported, plus the errors only the host, broker and verifiers raise, kept out of the TCB."""

from arca.wire.errors import *  # noqa: F403
from arca.wire.errors import ArcaError, EvidenceError
from arca.wire.errors import __doc__ as _wire_doc  # noqa: F401


class MalformedEvidence(EvidenceError):
    check = "malformed"


class SignatureInvalid(EvidenceError):
    check = "signature"


class ChainInvalid(EvidenceError):
    check = "chain"


class UntrustedRoot(ChainInvalid):
    check = "root"


class Expired(EvidenceError):
    """A certificate or collateral item is outside its validity at the evaluation instant."""

    check = "expired"


class Revoked(EvidenceError):
    check = "revoked"


class TcbError(EvidenceError):
    check = "tcb"


class CollateralError(ArcaError):
    """Collateral (TCB info, CRLs, certificates) is missing or could not be fetched."""


class StateError(ArcaError):
    """An operation was called in the wrong lifecycle state."""
