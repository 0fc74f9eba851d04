"""Intel DCAP (SGX and TDX) quote verification: one shared core, two thin verifiers.

Public API: :class:`SgxVerifier`, :class:`TdxVerifier` (both implement
:class:`arca.verifier.base.Verifier`), :func:`parse_quote`, and the pinned root fingerprint
:data:`INTEL_SGX_ROOT_CA_SPKI_SHA256`. Modules: ``quote`` (parser), ``pck`` (PCK extension,
chains, CRLs), ``signed_collateral`` (TCB Info / QE Identity), ``tcb`` (level matching),
``verify`` (the numbered verification path).
"""

from arca.verifier.dcap.pck import INTEL_SGX_ROOT_CA_SPKI_SHA256
from arca.verifier.dcap.quote import Quote, parse_quote
from arca.verifier.dcap.sgx import SgxVerifier
from arca.verifier.dcap.tdx import TdxVerifier

__all__ = ["INTEL_SGX_ROOT_CA_SPKI_SHA256", "Quote", "SgxVerifier", "TdxVerifier",
           "parse_quote"]
